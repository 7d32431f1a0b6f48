"""Large batches (more than ``config.CPU_SMALL_BATCH_MAX`` rows): the matrix products in BLAS
threaded by the BLAS library; the element-wise work around them in fastff's fused epilogues,
run serially after OpenBLAS (:mod:`.jit`, ``parallel_and_serial``: a thread team started after
an OpenBLAS call fights its still-spinning threads), in parallel after oneMKL
(:func:`epilogues_share_cores`).

* Forward: ``out = x @ W``, then bias, activation and statistics in one pass.
* Backward: dC/dx = delta @ W.T with the old W, then the SGD update as one in-place GEMM,
  W = W - lr * x.T @ delta (``beta = 1``): no weight-gradient array, no transposed copy of x.
  When the weight-gradient statistics are asked for, the gradient is formed a block of rows
  at a time instead, its sums taken and the block applied while in cache.

The products go to one BLAS library, :func:`library`: SciPy's OpenBLAS, or Intel oneMKL
(:mod:`.mkl`) on an Intel processor where the ``mkl`` package is installed
(``config.CPU_BLAS``).
"""
import functools

import numpy as np
from numba import njit
from scipy.linalg import blas as scipy_blas

from ... import config
from ...errors import InputError
from . import mkl
from .jit import JIT

LIBRARIES = ("auto", "openblas", "mkl")


@functools.cache
def intel_processor():
    """Whether this machine's processor is Intel's (Linux: /proc/cpuinfo's vendor_id)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return "GenuineIntel" in line
    except OSError:
        pass
    return False


# oneMKL loads now where "auto" will take it, as SciPy's OpenBLAS does on import, so that
# threadpoolctl's limits (a sweep's workers', a user's own) reach its threads from the start
# (not where FASTFF_CPU_BLAS=openblas asks for OpenBLAS alone)
if config.CPU_BLAS != "openblas" and intel_processor():
    mkl.load()


def library():
    """The BLAS library of the products, by ``config.CPU_BLAS``: "openblas" (SciPy's), "mkl"
    (oneMKL: an error where it is not installed) or "auto": oneMKL on an Intel processor where
    it is installed (faster there, slower on AMD's: benchmarks/NOTES.md, "oneMKL on an Intel
    Xeon"), else OpenBLAS."""
    choice = config.CPU_BLAS
    if choice not in LIBRARIES:
        raise InputError(f"config.CPU_BLAS must be one of {', '.join(map(repr, LIBRARIES))}, "
                         f"got {choice!r}")
    if choice == "auto":
        return "mkl" if intel_processor() and mkl.load() is not None else "openblas"
    if choice == "mkl" and mkl.load() is None:
        raise InputError("config.CPU_BLAS is 'mkl' but oneMKL is not installed here: "
                         "pip install 'fastff[mkl]'")
    return choice


def epilogues_share_cores():
    """Whether the element-wise passes between the products (the epilogues) run on the kernels'
    threads: after oneMKL's products, yes; after OpenBLAS's, no: its threads, still spinning
    after a call, fight a thread team (the step at batch 1024 on an Intel Xeon: 196-279 ms in
    parallel against 119-151 serially on OpenBLAS; 101-110 against 107-147 on oneMKL;
    benchmarks/NOTES.md, "oneMKL on an Intel Xeon"). The bits are the same either way."""
    return library() == "mkl"


def _operand(m):
    """``m`` as (Fortran-ordered array, transpose flag) without a copy where m or m.T is
    contiguous (others are copied by the wrapper)."""
    return (m, 0) if m.flags.f_contiguous else (m.T, 1)


def gemm(alpha, a, b, out, beta=0.0):
    """out = alpha * a @ b + beta * out, in place, in the BLAS library of :func:`library`.

    Every product of the CPU kernels goes to this one BLAS library: NumPy and SciPy each bring
    their own OpenBLAS, and one's threads spinning after a call slow the other's down (an
    SGD step's three products at batch 128: 20.5-24.5 ms mixed, 11.1-11.5 ms in one library,
    benchmarks/NOTES.md "Batch 128 and 1024"). In Fortran order out.T = b.T @ a.T; C-ordered
    arrays and their transposes pass without a copy.
    """
    if library() == "mkl":
        mkl.gemm(alpha, a, b, out, beta)
        return
    (p, tp), (q, tq) = _operand(b.T), _operand(a.T)
    fn = scipy_blas.get_blas_funcs("gemm", dtype=out.dtype)
    result = fn(alpha, p, q, beta=beta, c=out.T, trans_a=tp, trans_b=tq, overwrite_c=1)
    if not np.shares_memory(result, out):  # out was not Fortran-contiguous as out.T
        out[...] = result.T


def forward_product(x, W, out):
    """out = x @ W (the epilogue follows)."""
    gemm(1.0, x, W, out)


def grad_x_product(delta, W, grad_x):
    """grad_x = delta @ W.T (before W changes)."""
    gemm(1.0, delta, W.T, grad_x)


def sgd_update(x, delta, W, lr):
    """W -= lr * x.T @ delta as one GEMM accumulating into W (beta = 1): no gradient array."""
    gemm(-float(lr), x.T, delta, W, beta=1.0)


@njit(**JIT)
def _update_block(W, G, lr, i0, moments):
    """W[i0:i0+len(G)] -= lr * G, and the sum and sum of squares of G added to ``moments``."""
    s1, s2 = 0.0, 0.0
    for i in range(G.shape[0]):
        w, g = W[i0 + i], G[i]
        for j in range(g.shape[0]):
            w[j] -= lr * g[j]
        for j in range(g.shape[0]):
            v = np.float64(g[j])
            s1 += v
            s2 += v * v
    moments[0] += s1
    moments[1] += s2


def sgd_update_measured(x, delta, W, lr, chunk):
    """sgd_update that also returns (sum(G), sum(G**2)) of the weight gradient G = x.T @ delta:
    G a block of ``chunk`` rows at a time, each block's sums in float64, added in block order."""
    n_in = W.shape[0]
    block = np.empty((min(chunk, n_in), W.shape[1]), W.dtype)
    parts = np.zeros((-(-n_in // chunk), 2), np.float64)
    for c, i0 in enumerate(range(0, n_in, chunk)):
        i1 = min(n_in, i0 + chunk)
        G = block[:i1 - i0]
        gemm(1.0, x[:, i0:i1].T, delta, G)
        _update_block(W, G, lr, i0, parts[c])
    return parts.sum(axis=0)
