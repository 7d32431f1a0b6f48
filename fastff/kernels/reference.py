"""NumPy implementation of every fused op: the executable spec.

Every other backend (Numba on the CPU, CUDA on a GPU) must agree with these functions; the
tests compare against them on fresh random inputs. The code is written to be obviously right,
not fast. Contracts (DESIGN.md, "Kernel contracts"): W has shape (n_in, n_out), x (batch, n_in),
s = x @ W + b, h = f(s).
"""
import numpy as np

from .. import activations
from .contracts import backward_args, forward_args, second_order_args, softmax_args


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


def dense_forward(x, W, b, activation, out=None, stats=None):
    """h = f(x @ W + b); accumulate output statistics into ``stats`` when given.

    Parameters
    ----------
    x : ndarray (batch, n_in)
    W : ndarray (n_in, n_out)
    b : ndarray (n_out,)
    activation : str
        ``sigmoid``, ``tanh``, ``softsign``, ``relu`` or ``linear``.
    out : ndarray (batch, n_out), optional
        Written with h and returned.
    stats : ForwardStats, optional

    Returns
    -------
    ndarray (batch, n_out)
    """
    activation, out = forward_args(x, W, b, activation, out, stats)
    return forward_unchecked(x, W, b, activation, out=out, stats=stats)


def forward_unchecked(x, W, b, activation, out=None, stats=None, prefetch=True,
                      parallel=True):
    """dense_forward on checked arguments, with the interface the MLP calls on every backend
    (``prefetch`` and ``parallel``, hints to the CPU kernels, mean nothing here)."""
    act = activations.get(activation)
    h = act.forward(x @ W + b).astype(W.dtype, copy=False)
    if out is not None:
        out[...] = h
        h = out
    if stats is not None:
        accumulate_forward_stats(h, stats)
    return h


def dense_backward_sgd(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True):
    """Back-propagate through one layer and apply its SGD update in place.

    delta = grad_h * f'(h) (derivative from the output); grad_x = delta @ W.T with the *old* W;
    then W -= lr * x.T @ delta and b -= lr * delta.sum(0).

    Parameters
    ----------
    x : ndarray (batch, n_in)
        The layer's input from the forward pass.
    h : ndarray (batch, n_out)
        The layer's output from the forward pass.
    W, b : ndarray
        Parameters, updated in place.
    grad_h : ndarray (batch, n_out)
        dC/dh. For a mean loss it already carries the 1/batch factor.
    activation : str
    lr : float
        Learning rate.
    grad_x : ndarray (batch, n_in), optional
        Written with dC/dx and returned.
    stats : BackwardStats, optional
        Accumulates statistics of delta = dC/ds and of dC/dW.
    compute_grad_x : bool
        False skips dC/dx (the first layer needs none) and returns None.

    Returns
    -------
    ndarray (batch, n_in) or None
    """
    activation, grad_x = backward_args(x, h, W, b, grad_h, activation, lr, grad_x, stats,
                                       compute_grad_x)
    return backward_unchecked(x, h, W, b, grad_h, activation, lr, grad_x=grad_x, stats=stats,
                              compute_grad_x=compute_grad_x)


def backward_unchecked(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True, delta=None, prefetch=True, parallel=True):
    """dense_backward_sgd on checked arguments, with the interface the MLP calls on every
    backend (``delta``, a workspace, and ``prefetch`` and ``parallel``, hints, are for the CPU
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


def dense_backward_second_order(x, h, W, b, grad_h, activation, lr, rates, curv_h=None,
                                grad_x=None, curv_x=None, stats=None, compute_grad_x=True):
    """Back-propagate through one layer and apply a per-parameter-rate update in place.

    As :func:`dense_backward_sgd`, but each parameter moves by ``lr / (1 + A / damping) * g``
    where A is the running estimate held in ``rates`` (a
    :class:`~fastff.kernels.rates.LayerRates`; the formulas are in that module's docstring):
    the diagonal Gauss-Newton curvature (``diag_hessian``, which also back-propagates it) or
    the square root of the per-example gradient variance (``grad_variance``).

    Parameters
    ----------
    x, h, W, b, grad_h, activation, lr
        As in :func:`dense_backward_sgd`.
    rates : LayerRates
        The running estimates of this layer, updated in place (``rates.steps`` goes up by 1).
    curv_h : ndarray (batch, n_out), optional
        ``diag_hessian`` only, and required there: the Gauss-Newton curvature of the cost with
        respect to h (with the mean cost's 1/batch factor), from the layer above or from
        :func:`fastff.kernels.rates.output_curvature`.
    grad_x, curv_x : ndarray (batch, n_in), optional
        Written with dC/dx and (``diag_hessian``) the curvature with respect to x.
    stats : BackwardStats, optional
    compute_grad_x : bool
        False skips dC/dx and the curvature below (the first layer needs neither).

    Returns
    -------
    (grad_x, curv_x)
        Each an ndarray (batch, n_in), or None when not computed (``curv_x`` is None for
        ``grad_variance``).
    """
    grad_x, curv_x = second_order_args(x, h, W, b, grad_h, activation, lr, rates, curv_h,
                                       grad_x, curv_x, stats, compute_grad_x)
    return second_order_unchecked(x, h, W, b, grad_h, activation, lr, rates, curv_h, grad_x,
                                  curv_x, stats, compute_grad_x)


def second_order_unchecked(x, h, W, b, grad_h, activation, lr, rates, curv_h=None, grad_x=None,
                           curv_x=None, stats=None, compute_grad_x=True, delta=None,
                           prefetch=True, parallel=True):
    """dense_backward_second_order on checked arguments, with the interface the MLP calls on
    every backend (``delta``, ``prefetch`` and ``parallel`` as in :func:`backward_unchecked`)."""
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


def softmax_nll(z, y):
    """Mean negative log-likelihood of a softmax over ``z`` and its gradient.

    Parameters
    ----------
    z : ndarray (batch, n_classes)
        Logits.
    y : ndarray (batch,) of ints
        Class ids in [0, n_classes).

    Returns
    -------
    loss : float
        mean over the batch of -log softmax(z)[y].
    grad_z : ndarray (batch, n_classes)
        d loss / d z = (softmax(z) - onehot(y)) / batch, in the dtype of ``z``.
    """
    softmax_args(z, y)
    return softmax_nll_unchecked(z, y)


def softmax_parts(z, xp=np):
    """A stable softmax over the rows of ``z``, in ``z``'s dtype, as its parts: the row maxima
    m, e = exp(z - m) and the row sums of e (softmax = e / total). The one softmax of the
    NumPy side (the costs, the measurements, the curvature, ``MLP.forward``)."""
    m = z.max(axis=1, keepdims=True)
    e = xp.exp(z - m)
    return e, e.sum(axis=1, keepdims=True), m


def softmax(z, xp=np):
    """softmax(z) over the rows, in ``z``'s dtype."""
    e, total, _ = softmax_parts(z, xp)
    return e / total


def softmax_nll_unchecked(z, y, grad_z=None):
    """softmax_nll on checked arguments (the interface the MLP calls on every backend)."""
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


def softmax_quadratic(z, y):
    """Mean quadratic cost between a softmax over ``z`` and the one-hot target, and its gradient.

    The paper compares the log-likelihood with the quadratic cost of Rumelhart et al. (1986)
    (§4.1, Fig. 5) without naming the output nonlinearity under the quadratic cost;
    fastff keeps the softmax, so that the two costs differ only in the cost:
    C = 1/2 sum_k (p_k - t_k)^2 with p = softmax(z), t = onehot(y).

    Parameters
    ----------
    z : ndarray (batch, n_classes)
        Logits.
    y : ndarray (batch,) of ints
        Class ids in [0, n_classes).

    Returns
    -------
    loss : float
        mean over the batch of 1/2 sum_k (p_k - t_k)^2.
    grad_z : ndarray (batch, n_classes)
        d loss / d z_j = p_j ((p_j - t_j) - sum_k (p_k - t_k) p_k) / batch, in the dtype of ``z``.
    """
    softmax_args(z, y)
    return softmax_quadratic_unchecked(z, y)


def softmax_quadratic_unchecked(z, y, grad_z=None):
    """softmax_quadratic on checked arguments (the interface the MLP calls on every backend)."""
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

