"""Fused Numba kernels for the CPU, with the contracts of :mod:`fastff.kernels.reference`.

The call tree (each entry point validates, then calls its ``*_unchecked`` twin, which the MLP
calls directly on arrays it owns)::

    dense_forward -> forward_unchecked
        batch <= CPU_SMALL_BATCH_MAX   tiles.gemm_blocks          W by blocks of rows, in parallel,
                                                                  read in row order
                                       epilogues.forward_epilogue sum of the blocks, bias, f,
                                                                  statistics; columns in parallel
        larger batches                 blas.forward_product       x @ W in BLAS
                                       epilogues.forward_epilogue_serial  one chunk: the
                                                                  whole width, rows in order
    dense_backward_sgd -> backward_unchecked
        small                          epilogues.delta_bias       delta, bias update, delta sums
                                       tiles.backward_rows        per row of W: dC/dx with the old
                                                                  row, then its update
        large                          epilogues.delta_bias_serial  one chunk, as above
                                       blas.grad_x_product        delta @ W.T
                                       blas.sgd_update            W -= lr x.T delta, one GEMM
                                       (blas.sgd_update_measured with weight-gradient statistics)
    dense_backward_second_order -> second_order_unchecked
                                       rates.rates_columns, then rates.rates_rows (small) or
                                       rates.rates_blas (large)
    softmax_nll, softmax_quadratic     softmax.*

Modules: :mod:`.jit` (compile options, one body for parallel and serial passes),
:mod:`.simd` (register tiles), :mod:`.epilogues`, :mod:`.tiles`, :mod:`.blas`, :mod:`.rates`,
:mod:`.softmax`. Why each layout was chosen, with timings: benchmarks/NOTES.md.

Determinism: work is split into a fixed number of chunks that does not depend on the thread
count, every chunk writes only its own columns or rows, and the per-chunk partial histograms and
sums are merged in chunk order. Same inputs, same bits.
"""
import numba
import numpy as np

from ... import activations, config
from ...errors import InputError
from ..contracts import backward_args, forward_args, second_order_args, softmax_args
from ..memory import empty
from . import blas, simd, softmax, tiles
from . import rates as rate_kernels
from .epilogues import (delta_bias, delta_bias_serial, delta_stat_args, forward_epilogue,
                        forward_epilogue_serial, forward_stat_args, grad_w_moments)



def _use_tiles(batch):
    """True when a batch of this size takes the register tiles (:mod:`.tiles`), False for BLAS
    (:mod:`.blas`); checks the configuration the choice rests on."""
    value = tiles.setting("CPU_SMALL_BATCH_MAX", 0, tiles.BACKWARD_MAX_ROWS,
                          " (the rows a register tile of the backward pass holds; larger batches "
                          "go to BLAS)")
    if (config.CPU_VECTOR_BYTES or simd.VEC_BYTES) != simd.VEC_BYTES:
        raise InputError(f"fastff.config.CPU_VECTOR_BYTES is {config.CPU_VECTOR_BYTES}, but the "
                         f"kernels were built for {simd.VEC_BYTES}-byte vectors when fastff was "
                         "imported; set FASTFF_CPU_VECTOR_BYTES before importing fastff instead")
    return batch <= value


def forward_unchecked(x, W, b, activation, out=None, stats=None, prefetch=True, parallel=True):
    """The forward pass on validated, C-contiguous arrays of one dtype (used by the MLP).

    ``prefetch=False`` turns the small-batch loop's software prefetch off, as in
    :func:`backward_unchecked`.
    ``parallel=False`` runs the small-batch passes' serial twins: the same numbers, bit for bit,
    from code that compiles faster (``fastff.train`` steps with them while the parallel ones
    compile in the background).
    """
    code = activations.CODES[activation]
    if out is None:
        out = empty((x.shape[0], W.shape[1]), W.dtype)
    chunk = int(config.CPU_COL_CHUNK)
    st = forward_stat_args(stats, W.dtype)
    if _use_tiles(x.shape[0]):
        block = int(config.CPU_ROW_BLOCK)
        # NumPy's own allocation: a block-aligned one costs more per call than it saves here
        # (benchmarks/NOTES.md, "Arrays on cache lines")
        blocks = np.empty((-(-W.shape[0] // block), x.shape[0], W.shape[1]), W.dtype)
        ahead = tiles.setting("CPU_FWD_PREFETCH_ROWS", 0, 2**20) if prefetch else 0
        (tiles.gemm_blocks if parallel else tiles.gemm_blocks_serial)(
            x, W, blocks, block, ahead, *tiles.forward_shape(x.shape[0]))
        (forward_epilogue if parallel else forward_epilogue_serial)(out, blocks, b, code, chunk, st)
    else:  # one thread: the whole width in one chunk, each row read once in order
        blas.forward_product(x, W, out)
        forward_epilogue_serial(out, np.empty((0, 1, 1), W.dtype), b, code, W.shape[1], st)
    return out


def backward_unchecked(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True, delta=None, prefetch=True, parallel=True):
    """The backward pass + SGD update on validated arrays (used by the MLP); ``delta`` is an
    optional (batch, n_out) workspace. ``prefetch=False`` turns the software prefetch of the
    small-batch loop off: right for weights that stay in cache from one step to the next (see
    config.CPU_PREFETCH_MIN_BYTES); ``parallel`` as in :func:`forward_unchecked`."""
    code = activations.CODES[activation]
    if compute_grad_x and grad_x is None:
        grad_x = empty(x.shape, W.dtype)
    lr = W.dtype.type(lr)
    B = x.shape[0]
    if delta is None:
        delta = empty((B, W.shape[1]), W.dtype)
    small = _use_tiles(B)
    chunk = int(config.CPU_ROW_BLOCK)
    want_gw = stats is not None and stats.weight_grad
    # chunks of columns for threads to share; one chunk when a single thread runs the pass
    (delta_bias if small and parallel else delta_bias_serial)(
        grad_h, h, delta, b, code, lr, int(config.CPU_COL_CHUNK) if small else W.shape[1],
        delta_stat_args(stats))
    if small:
        if want_gw:  # from x and delta, which the update leaves alone
            moments = grad_w_moments(x, delta)
        gx = grad_x if compute_grad_x else np.empty((1, 1), W.dtype)
        ahead = tiles.setting("CPU_BWD_PREFETCH_ROWS", 0, 2**20) if prefetch else 0
        (tiles.backward_rows if parallel else tiles.backward_rows_serial)(
            x, delta, W, gx, lr, compute_grad_x, chunk, ahead, *tiles.backward_shape(B))
    else:
        if compute_grad_x:
            blas.grad_x_product(delta, W, grad_x)
        if want_gw:
            moments = blas.sgd_update_measured(x, delta, W, lr, chunk)
        else:
            blas.sgd_update(x, delta, W, lr)
    if want_gw:
        stats.grad_w_total += moments[0]
        stats.grad_w_total_sq += moments[1]
    return grad_x if compute_grad_x else None


def second_order_unchecked(x, h, W, b, grad_h, activation, lr, rates, curv_h=None, grad_x=None,
                           curv_x=None, stats=None, compute_grad_x=True, delta=None,
                           prefetch=True, parallel=True):
    """dense_backward_second_order on validated arrays (used by the MLP); ``delta`` is an
    optional (batch, n_out) workspace, ``prefetch`` means nothing here, ``parallel`` as in
    :func:`forward_unchecked`."""
    dt = W.dtype.type
    B = x.shape[0]
    hessian = rates.method == "diag_hessian"
    if compute_grad_x and grad_x is None:
        grad_x = empty(x.shape, W.dtype)
    if compute_grad_x and hessian and curv_x is None:
        curv_x = empty(x.shape, W.dtype)
    if delta is None:
        delta = empty((B, W.shape[1]), W.dtype)
    q = empty((B, W.shape[1]), W.dtype)
    # lr / (1 + A / damping) as lr * damping / (damping + A): one division per entry
    hyper = (dt(lr * rates.damping), hessian, dt(rates.damping), dt(rates.decay),
             dt(rates.correction()))
    rate_kernels.rates_columns(grad_h, h, curv_h if hessian else q, delta, q, b, rates.b,
                               activations.CODES[activation], *hyper, delta_stat_args(stats))
    if stats is not None and stats.weight_grad:  # from x and delta, which the update leaves alone
        moments = grad_w_moments(x, delta)
        stats.grad_w_total += moments[0]
        stats.grad_w_total_sq += moments[1]
    gx = grad_x if compute_grad_x else np.empty((1, 1), W.dtype)
    cx = curv_x if compute_grad_x and hessian else np.empty((1, 1), W.dtype)
    if not _use_tiles(B):
        path = rate_kernels.rates_blas
    else:
        path = rate_kernels.rates_rows if parallel else rate_kernels.rates_rows_serial
    path(x, delta, q, W, rates.W, gx, cx, *hyper, compute_grad_x, int(config.CPU_ROW_BLOCK))
    rates.steps += 1
    return (grad_x if compute_grad_x else None), (curv_x if compute_grad_x and hessian else None)


def dense_backward_second_order(x, h, W, b, grad_h, activation, lr, rates, curv_h=None,
                                grad_x=None, curv_x=None, stats=None, compute_grad_x=True):
    """Backward pass and per-parameter-rate update in one pass over W; the contract of
    reference.dense_backward_second_order."""
    grad_x, curv_x = second_order_args(x, h, W, b, grad_h, activation, lr, rates, curv_h,
                                       grad_x, curv_x, stats, compute_grad_x)
    c = np.ascontiguousarray
    return second_order_unchecked(c(x), c(h), W, b, c(grad_h), activations.get(activation).name,
                                  lr, rates, None if curv_h is None else c(curv_h), grad_x,
                                  curv_x, stats, bool(compute_grad_x))


def dense_forward(x, W, b, activation, out=None, stats=None):
    """h = f(x @ W + b) with statistics, fused; the contract of reference.dense_forward.

    Parameters
    ----------
    x : ndarray (batch, n_in), float32 or float64
    W : ndarray (n_in, n_out), same dtype
    b : ndarray (n_out,), same dtype
    activation : str
    out : ndarray (batch, n_out), optional
    stats : ForwardStats, optional
        Accumulates saturation counts, sums and the histogram of h in the same pass; made for
        this layer (``ForwardStats(n_out, activation)``).

    Returns
    -------
    ndarray (batch, n_out)
    """
    activation, out = forward_args(x, W, b, activation, out, stats)
    return forward_unchecked(np.ascontiguousarray(x), np.ascontiguousarray(W),
                             np.ascontiguousarray(b), activation, out, stats)


def dense_backward_sgd(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True):
    """Backward pass and SGD update in one pass over W; the contract of reference.dense_backward_sgd.

    W and b are updated in place and must be C-contiguous and writable. Returns dC/dx computed
    with the old W (or None when ``compute_grad_x`` is False).
    """
    activation, grad_x = backward_args(x, h, W, b, grad_h, activation, lr, grad_x, stats,
                                       compute_grad_x)
    return backward_unchecked(np.ascontiguousarray(x), np.ascontiguousarray(h), W, b,
                              np.ascontiguousarray(grad_h), activation, lr, grad_x, stats,
                              bool(compute_grad_x))


def softmax_nll(z, y, grad_z=None):
    """Mean softmax negative log-likelihood and its gradient; the contract of reference.softmax_nll."""
    grad_z = softmax_args(z, y, grad_z)
    return softmax_nll_unchecked(np.ascontiguousarray(z), np.ascontiguousarray(y, dtype=np.int64),
                                 grad_z)


def softmax_nll_unchecked(z, y, grad_z=None):
    """softmax_nll on validated arrays (used by the MLP)."""
    if grad_z is None:
        grad_z = np.empty_like(z)
    return float(softmax.softmax_nll(z, y, grad_z)), grad_z


def softmax_quadratic(z, y, grad_z=None):
    """Mean quadratic cost of a softmax and its gradient; the contract of
    reference.softmax_quadratic."""
    grad_z = softmax_args(z, y, grad_z)
    return softmax_quadratic_unchecked(np.ascontiguousarray(z),
                                       np.ascontiguousarray(y, dtype=np.int64), grad_z)


def softmax_quadratic_unchecked(z, y, grad_z=None):
    """softmax_quadratic on validated arrays (used by the MLP)."""
    if grad_z is None:
        grad_z = np.empty_like(z)
    return float(softmax.softmax_quadratic(z, y, grad_z)), grad_z


def threading_layer():
    """The Numba threading layer in use (after the first parallel call)."""
    return numba.threading_layer()
