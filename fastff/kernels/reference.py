"""NumPy implementation of every fused op: the executable spec.

Every other backend (Numba on the CPU, CUDA on a GPU) must agree with these functions; the
tests compare against them on fresh random inputs. The code is written to be obviously right,
not fast. Contracts (DESIGN.md, "Kernel contracts"): W has shape (n_in, n_out), x (batch, n_in),
s = x @ W + b, h = f(s).
"""
import numpy as np

from .. import activations
from ..softmax import softmax, softmax_parts
from .checked import public


def array_module():
    """The array module of these kernels' arrays."""
    return np


def hist_bin_index(h, lo, hi, bins):
    """Bin index of each value of ``h`` for a fixed-bin histogram over [lo, hi).

    Computed in float64 so that every backend finds the same bin: values below ``lo`` go to bin
    0, values at or above ``hi`` to the last bin, NaN gets -1 (not counted).
    """
    v = (np.asarray(h, dtype=np.float64) - lo) * (bins / (hi - lo))
    idx = np.full(v.shape, -1, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        inside = (v >= 0) & (v < bins)
        idx[inside] = v[inside].astype(np.int64)
        idx[v < 0] = 0
        idx[v >= bins] = bins - 1
    return idx


def accumulate_forward_stats(h, stats):
    """Add the statistics of a layer output ``h`` (batch, n_units) to a ForwardStats."""
    low, high = h.dtype.type(stats.low), h.dtype.type(stats.high)  # compare in h's own dtype
    stats.sat_low += (h <= low).sum(axis=0)
    stats.sat_high += (h >= high).sum(axis=0)
    h64 = h.astype(np.float64)
    stats.total += h64.sum(axis=0)
    stats.total_sq += (h64 * h64).sum(axis=0)
    idx = hist_bin_index(h, stats.hist_lo, stats.hist_hi, stats.bins).ravel()
    stats.hist += np.bincount(idx[idx >= 0], minlength=stats.bins)
    stats.rows[0] += h.shape[0]


def accumulate_backward_stats(delta, grad_w, stats):
    """Add dC/ds (``delta``) and dC/dW (``grad_w``) statistics to a BackwardStats."""
    d64 = delta.astype(np.float64)
    stats.delta_total += d64.sum(axis=0)
    stats.delta_total_sq += (d64 * d64).sum(axis=0)
    if stats.weight_grad:
        g64 = grad_w.astype(np.float64)
        stats.grad_w_total += g64.sum()
        stats.grad_w_total_sq += (g64 * g64).sum()
    stats.counts[0] += delta.shape[0]  # rows
    stats.counts[1] += 1  # steps


def forward_unchecked(x, W, b, activation, out=None, stats=None, prefetch=True,
                      parallel=True):
    """h = f(x @ W + b) on checked arguments, with the interface the MLP calls on every
    backend (``prefetch`` and ``parallel``, hints to the CPU kernels, mean nothing here)."""
    act = activations.get(activation)
    h = act.forward(x @ W + b).astype(W.dtype, copy=False)
    if out is not None:
        out[...] = h
        h = out
    if stats is not None:
        accumulate_forward_stats(h, stats)
    return h


def backward_unchecked(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True, delta=None, prefetch=True, parallel=True):
    """delta = grad_h * f'(h); grad_x = delta @ W.T with the old W; then W -= lr x.T delta
    and b -= lr delta.sum(0): dense_backward_sgd on checked arguments, with the interface the
    MLP calls on every backend (``delta``, a workspace, and ``prefetch`` and ``parallel``, hints, are for the CPU
    kernels and mean nothing here)."""
    act = activations.get(activation)
    dt = W.dtype.type
    delta = (grad_h * act.derivative(h)).astype(W.dtype, copy=False)
    gx = None
    if compute_grad_x:
        gx = delta @ W.T
        if grad_x is not None:
            grad_x[...] = gx
            gx = grad_x
    grad_w = x.T @ delta
    if stats is not None:
        accumulate_backward_stats(delta, grad_w, stats)
    W -= dt(lr) * grad_w
    b -= dt(lr) * delta.sum(axis=0)
    return gx


def second_order_unchecked(x, h, W, b, grad_h, activation, lr, rates, curv_h=None, grad_x=None,
                           curv_x=None, stats=None, compute_grad_x=True, delta=None,
                           prefetch=True, parallel=True):
    """Each parameter moves by lr / (1 + A / damping) * g, A the running estimate in
    ``rates`` (fastff.kernels.rates): dense_backward_second_order on checked arguments, with
    the interface the MLP calls on every backend (``delta``, ``prefetch`` and ``parallel`` as in :func:`backward_unchecked`)."""
    act = activations.get(activation)
    dt = W.dtype.type
    hessian = rates.method == "diag_hessian"
    slope = act.derivative(h).astype(W.dtype, copy=False)
    delta = (grad_h * slope).astype(W.dtype, copy=False)
    q = (curv_h * slope * slope) if hessian else delta * delta
    gx = cx = None
    if compute_grad_x:
        gx = delta @ W.T
        cx = q @ (W * W).T if hessian else None
        if grad_x is not None:
            grad_x[...] = gx
            gx = grad_x
        if cx is not None and curv_x is not None:
            curv_x[...] = cx
            cx = curv_x
    grad_w, grad_b = x.T @ delta, delta.sum(axis=0)
    est_w, est_b = (x * x).T @ q, q.sum(axis=0)
    if not hessian:
        B = x.shape[0]
        est_w = np.maximum(dt(B / (B - 1)) * (dt(B) * est_w - grad_w * grad_w), dt(0))
        est_b = np.maximum(dt(B / (B - 1)) * (dt(B) * est_b - grad_b * grad_b), dt(0))
    if stats is not None:
        accumulate_backward_stats(delta, grad_w, stats)
    corr, keep = dt(rates.correction()), dt(rates.decay)
    for param, grad, avg, est in ((W, grad_w, rates.W, est_w), (b, grad_b, rates.b, est_b)):
        avg[...] = keep * avg + (dt(1) - keep) * est
        scale = corr * avg
        if not hessian:
            scale = np.sqrt(scale)
        param -= dt(lr * rates.damping) * grad / (dt(rates.damping) + scale)
    rates.steps += 1
    return gx, cx


def softmax_nll_unchecked(z, y, grad_z=None):
    """Mean -log softmax(z)[y] and its gradient (softmax(z) - onehot(y)) / batch, on checked
    arguments (the interface the MLP calls on every backend)."""
    e, total, m = softmax_parts(z)
    rows = np.arange(z.shape[0])
    logp_y = (z[rows, y] - m[:, 0]) - np.log(total[:, 0])
    loss = float(-logp_y.astype(np.float64).mean())
    grad = e / total
    grad[rows, y] -= 1
    grad /= z.shape[0]
    grad = grad.astype(z.dtype, copy=False)
    if grad_z is not None:
        grad_z[...] = grad
        grad = grad_z
    return loss, grad


def softmax_quadratic_unchecked(z, y, grad_z=None):
    """Mean 1/2 sum_k (p_k - t_k)^2, p = softmax(z), t = onehot(y), and its gradient
    p_j ((p_j - t_j) - sum_k (p_k - t_k) p_k) / batch, on checked arguments (the interface the
    MLP calls on every backend)."""
    z64 = z.astype(np.float64)
    p = softmax(z64)
    rows = np.arange(z.shape[0])
    err = p.copy()
    err[rows, y] -= 1
    loss = float(0.5 * (err * err).sum(axis=1).mean())
    grad = p * (err - (err * p).sum(axis=1, keepdims=True)) / z.shape[0]
    grad = grad.astype(z.dtype)
    if grad_z is not None:
        grad_z[...] = grad
        grad = grad_z
    return loss, grad



# the public kernels, checked (fastff.kernels.checked): the same on every backend
(dense_forward, dense_backward_sgd, dense_backward_second_order, softmax_nll,
 softmax_quadratic) = public(__name__)
