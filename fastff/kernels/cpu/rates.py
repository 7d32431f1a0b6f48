"""Per-parameter learning rates (fastff.kernels.rates) on the CPU: the SGD pass's layout, one
walk over the rows of W, each row's dC/dx (and the curvature passed down) read before its
update, with two sums per entry instead of one: g = x^T delta and s = (x^2)^T q.

* :func:`rates_columns`: delta, q, the bias's update and the delta sums (batch x n_out work).
* :func:`rates_rows` (small batches): chunks of rows of W in parallel.
* :func:`rates_blas` (large batches): the four products in BLAS, the row updates serial.
"""
import math

import numpy as np
from numba import njit, prange

from .blas import gemm
from .epilogues import delta_moments, delta_tile
from .jit import JIT, like, parallel_and_serial


@njit(**JIT)
def _rate_row(w, avg, g, s, lr, hessian, damping, keep, corr, B):
    """One row of W (or b) and of its running estimate, from its sums g and s."""
    n = w.shape[0]
    fresh = like(lr, 1.0) - keep
    if hessian:
        for j in range(n):
            avg[j] = keep * avg[j] + fresh * s[j]
            w[j] -= lr * g[j] / (damping + corr * avg[j])
    else:
        unbias, rows = like(lr, B / (B - 1)), like(lr, B)
        for j in range(n):
            v = max(unbias * (rows * s[j] - g[j] * g[j]), like(lr, 0.0))
            avg[j] = keep * avg[j] + fresh * v
            w[j] -= lr * g[j] / (damping + math.sqrt(corr * avg[j]))


@njit(**JIT)
def rates_columns(grad_h, h, curv_h, delta, q, b, avg_b, act, lr, hessian, damping, keep, corr,
                  st):
    """delta = grad_h f'(h); q = curv_h f'(h)^2 (diag_hessian) or delta^2; the bias's update;
    the sums of delta when asked (serial: batch x n_out work)."""
    B, n = h.shape
    delta_tile(grad_h, h, delta, act, 0, B, 0, n)
    if hessian:
        delta_tile(curv_h, h, q, act, 0, B, 0, n)
        delta_tile(q, h, q, act, 0, B, 0, n)  # f' twice
    else:
        for r in range(B):
            d, e = delta[r], q[r]
            for j in range(n):
                e[j] = d[j] * d[j]
    g, s = np.zeros(n, b.dtype), np.zeros(n, b.dtype)
    for r in range(B):  # rows in order, as epilogues.delta_bias_columns
        d, e = delta[r], q[r]
        for j in range(n):
            g[j] += d[j]
            s[j] += e[j]
    _rate_row(b, avg_b, g, s, lr, hessian, damping, keep, corr, B)
    if st.on:
        delta_moments(delta, 0, n, st.total, st.total_sq)
        st.counts[0] += B  # rows
        st.counts[1] += 1  # steps


def _rates_rows(x, delta, q, W, avg, gx, cx, lr, hessian, damping, keep, corr, want_gx, chunk):
    """Small batches: chunks of rows of W in parallel; per row, dC/dx (and the curvature
    below) with the old row, then the two sums and the row's update."""
    B = x.shape[0]
    n_in, n = W.shape
    for c in prange((n_in + chunk - 1) // chunk):
        g, s = np.empty(n, W.dtype), np.empty(n, W.dtype)
        for i in range(c * chunk, min(n_in, c * chunk + chunk)):
            w = W[i]
            if want_gx:
                for r in range(B):
                    d, e = delta[r], q[r]
                    acc, acc_sq = like(lr, 0.0), like(lr, 0.0)
                    for j in range(n):
                        acc += d[j] * w[j]
                    gx[r, i] = acc
                    if hessian:
                        for j in range(n):
                            acc_sq += e[j] * (w[j] * w[j])
                        cx[r, i] = acc_sq
            for j in range(n):
                g[j] = like(lr, 0.0)
                s[j] = like(lr, 0.0)
            for r in range(B):
                xv = x[r, i]
                xv2 = xv * xv
                d, e = delta[r], q[r]
                for j in range(n):
                    g[j] += xv * d[j]
                    s[j] += xv2 * e[j]
            _rate_row(w, avg[i], g, s, lr, hessian, damping, keep, corr, B)


rates_rows, rates_rows_serial = parallel_and_serial(_rates_rows)


@njit(**JIT)
def _update_block(W, avg, G, S, i0, lr, hessian, damping, keep, corr, B):
    """The updates of rows i0 .. i0 + len(G) from their sums G and S (the BLAS path; serial,
    see blas.py: a parallel team between BLAS calls fights BLAS's spinning threads)."""
    for i in range(G.shape[0]):
        _rate_row(W[i0 + i], avg[i0 + i], G[i], S[i], lr, hessian, damping, keep, corr, B)


def rates_blas(x, delta, q, W, avg, gx, cx, lr, hessian, damping, keep, corr, want_gx, chunk):
    """Large batches: the four products in BLAS (blas.gemm; the sums a block of rows at a time)."""
    if want_gx:
        gemm(1.0, delta, W.T, gx)  # before the update: the old W
        if hessian:
            gemm(1.0, q, np.square(W).T, cx)
    x2 = np.square(x)
    n_in = W.shape[0]
    G = np.empty((min(chunk, n_in), W.shape[1]), W.dtype)
    S = np.empty_like(G)
    for i0 in range(0, n_in, chunk):
        i1 = min(n_in, i0 + chunk)
        gemm(1.0, x[:, i0:i1].T, delta, G[:i1 - i0])
        gemm(1.0, x2[:, i0:i1].T, q, S[:i1 - i0])
        _update_block(W, avg, G[:i1 - i0], S[:i1 - i0], i0, lr, hessian, damping, keep, corr,
                      x.shape[0])
