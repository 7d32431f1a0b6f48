"""The softmax output layer's costs and their gradients w.r.t. the logits (float64 loss)."""
import math

import numpy as np
from numba import njit

from .jit import JIT, like


@njit(**JIT)
def _exp_row(zr, gr):
    """gr[k] = exp(zr[k] - max(zr)); returns (max, sum of gr): a softmax row before its division."""
    m = zr[0]
    for k in range(1, zr.shape[0]):
        m = max(m, zr[k])
    tot = like(m, 0.0)
    for k in range(zr.shape[0]):
        gr[k] = np.exp(zr[k] - m)
        tot += gr[k]
    return m, tot


@njit(**JIT)
def softmax_nll(z, y, grad):
    B, K = z.shape
    loss = 0.0
    inv_rows = like(z[0, 0], 1.0) / like(z[0, 0], B)
    for r in range(B):
        zr, gr = z[r], grad[r]
        m, tot = _exp_row(zr, gr)
        loss += np.float64(math.log(tot)) + np.float64(m) - np.float64(zr[y[r]])
        for k in range(K):
            gr[k] = gr[k] / tot
        gr[y[r]] -= like(m, 1.0)
        for k in range(K):
            gr[k] = gr[k] * inv_rows
    return loss / B


@njit(**JIT)
def softmax_quadratic(z, y, grad):
    """1/2 sum_k (softmax(z)_k - onehot_k)^2, mean over rows, and its gradient (in ``grad``)."""
    B, K = z.shape
    loss = 0.0
    inv_rows = like(z[0, 0], 1.0) / like(z[0, 0], B)
    for r in range(B):
        zr, gr = z[r], grad[r]
        m, tot = _exp_row(zr, gr)
        # gr holds p; dot = sum_k (p_k - t_k) p_k
        dot = like(m, 0.0)
        row = 0.0
        for k in range(K):
            p = gr[k] / tot
            gr[k] = p
            e = p - like(m, 1.0) if k == y[r] else p
            dot += e * p
            row += np.float64(e) * np.float64(e)
        loss += 0.5 * row
        for k in range(K):
            p = gr[k]
            e = p - like(m, 1.0) if k == y[r] else p
            gr[k] = p * (e - dot) * inv_rows
    return loss / B
