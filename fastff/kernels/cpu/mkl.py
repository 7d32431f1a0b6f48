"""Intel oneMKL's GEMM through its C interface, for the large-batch products where the ``mkl``
package is installed (``pip install 'fastff[mkl]'``).

On an Intel Xeon it runs the paper's products faster than SciPy's OpenBLAS, on an AMD EPYC
slower (benchmarks/NOTES.md, "oneMKL on an Intel Xeon"); :func:`fastff.kernels.cpu.blas.library`
chooses. MKL is loaded when first asked for (:mod:`.blas` asks on import where "auto" will take
it; ``libmkl_rt``, found beside this Python, where the wheel puts it, or on the library path)
and set to its reproducible mode (``MKL_CBWR_AUTO``: the same
bits from one run to the next on one machine with one thread count), unless the environment
already sets ``MKL_CBWR``.
"""
import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

import numpy as np

from ...errors import InputError

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS's enums
CBWR_AUTO = 1  # MKL_CBWR_AUTO
_LIBRARY = []  # the loaded library once tried: [CDLL or None]


def library_path():
    """The path of ``libmkl_rt`` (the wheel's, under this Python's prefix, first), or None."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        found = sorted(Path(prefix, "lib").glob("libmkl_rt.so*"))
        if found:
            return str(found[0])
    return ctypes.util.find_library("mkl_rt")


def load():
    """The loaded ``libmkl_rt`` with its GEMMs' argument types set, or None where there is none
    (or it does not load); tried once a process."""
    if not _LIBRARY:
        _LIBRARY.append(_open(library_path()))
    return _LIBRARY[0]


def _open(path):
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    if "MKL_CBWR" not in os.environ:  # before any other call, as MKL asks
        lib.MKL_CBWR_Set(ctypes.c_int(CBWR_AUTO))
    for name, real in (("cblas_sgemm", ctypes.c_float), ("cblas_dgemm", ctypes.c_double)):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_int] * 6 + [real, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                            ctypes.c_int, real, ctypes.c_void_p, ctypes.c_int]
        fn.restype = None
    return lib


def _operand(m):
    """(CBLAS transpose flag, array, leading dimension) of a row-major operand ``m``: as it is
    where its rows, or its columns, are runs of contiguous elements; a contiguous copy else."""
    item = m.itemsize
    rows, cols = m.shape
    if m.strides[1] == item and m.strides[0] >= max(1, cols) * item and m.strides[0] % item == 0:
        return NO_TRANS, m, m.strides[0] // item
    if m.strides[0] == item and m.strides[1] >= max(1, rows) * item and m.strides[1] % item == 0:
        return TRANS, m, m.strides[1] // item
    m = np.ascontiguousarray(m)
    return NO_TRANS, m, max(1, cols)


def gemm(alpha, a, b, out, beta=0.0):
    """out = alpha * a @ b + beta * out, in place, in oneMKL (``out`` C-contiguous, or with
    contiguous rows; float32 or float64 throughout, as blas.gemm is called)."""
    lib = load()
    if lib is None:
        raise InputError("oneMKL is not installed here: pip install 'fastff[mkl]', or set "
                         "fastff.config.CPU_BLAS to 'openblas'")
    (m, k), n = a.shape, b.shape[1]
    if not (a.dtype == b.dtype == out.dtype in (np.float32, np.float64)) \
            or b.shape[0] != k or out.shape != (m, n):
        raise InputError(f"gemm takes float32 or float64 operands of one dtype and matching "
                         f"shapes, got {a.dtype} {a.shape} @ {b.dtype} {b.shape} into "
                         f"{out.dtype} {out.shape}")
    if out.strides[1] != out.itemsize or out.strides[0] < max(1, n) * out.itemsize:
        tmp = np.empty_like(out, order="C")
        if beta:
            tmp[...] = out
        gemm(alpha, a, b, tmp, beta)
        out[...] = tmp
        return
    if m == 0 or n == 0:
        return
    fn = lib.cblas_sgemm if out.dtype == np.float32 else lib.cblas_dgemm
    (ta, pa, lda), (tb, pb, ldb) = _operand(a), _operand(b)
    fn(ROW_MAJOR, ta, tb, m, n, k, alpha, pa.ctypes.data, lda, pb.ctypes.data, ldb, beta,
       out.ctypes.data, out.strides[0] // out.itemsize)
