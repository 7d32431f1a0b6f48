"""Fused Numba kernels for the CPU, with the contracts of :mod:`fastff.kernels.reference`.

The call tree (each public kernel checks its arguments once, for every backend, in
:mod:`fastff.kernels.checked`, then calls its ``*_unchecked`` twin here, which the MLP calls
directly on arrays it owns)::

    dense_forward -> forward_unchecked           (the checks: fastff.kernels.checked)
        batch <= CPU_SMALL_BATCH_MAX   tiles.gemm_blocks          W by blocks of rows, in parallel,
                                                                  read in row order
                                       epilogues.forward_epilogue sum of the blocks, bias, f,
                                                                  statistics; columns in parallel
        larger batches                 blas.forward_product       x @ W in BLAS
                                       epilogues.forward_epilogue_serial  one chunk: the
                                                                  whole width, rows in order
                                       (forward_epilogue after oneMKL: blas.epilogues_share_cores)
    dense_backward_sgd -> backward_unchecked
        small                          epilogues.delta_bias       delta, bias update, delta sums
                                       tiles.backward_rows        per row of W: dC/dx with the old
                                                                  row, then its update
        large                          epilogues.delta_bias_serial  one chunk, as above
                                       (delta_bias after oneMKL)
                                       blas.grad_x_product        delta @ W.T
                                       blas.sgd_update            W -= lr x.T delta, one GEMM
                                       (blas.sgd_update_measured with weight-gradient statistics)
    dense_backward_second_order -> second_order_unchecked
                                       rates.rates_columns, then rates.rates_rows (small) or
                                       rates.rates_blas (large)
    softmax_nll, softmax_quadratic     softmax.*

Modules: :mod:`.jit` (compile options, one body for parallel and serial passes),
:mod:`.simd` (register tiles), :mod:`.epilogues`, :mod:`.tiles`, :mod:`.blas` (the products, in
OpenBLAS or :mod:`.mkl`, Intel oneMKL: ``config.CPU_BLAS``), :mod:`.rates`, :mod:`.softmax`.
Why each layout was chosen, with timings: benchmarks/NOTES.md.

Determinism: work is split into a fixed number of chunks that does not depend on the thread
count, every chunk writes only its own columns or rows, and the per-chunk partial histograms and
sums are merged in chunk order. Same inputs, same bits (above CPU_SMALL_BATCH_MAX: for one BLAS
library and thread count).
"""
import numba
import numpy as np

from ... import activations, config
from ...errors import InputError
from ..checked import public
from ..memory import empty, scratch
from . import blas, simd, softmax, tiles
from . import rates as rate_kernels
from .epilogues import (delta_bias, delta_bias_serial, delta_stat_args, forward_epilogue,
                        forward_epilogue_serial, forward_stat_args, grad_w_moments)



def array_module():
    """The array module of these kernels' arrays."""
    return np


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
        # one buffer per thread, not an allocation per call (see fastff.kernels.memory)
        blocks = scratch("forward_blocks", (-(-W.shape[0] // block), x.shape[0], W.shape[1]),
                         W.dtype)
        ahead = tiles.setting("CPU_FWD_PREFETCH_ROWS", 0, 2**20) if prefetch else 0
        (tiles.gemm_blocks if parallel else tiles.gemm_blocks_serial)(
            x, W, blocks, block, ahead, *tiles.forward_shape(x.shape[0]))
        (forward_epilogue if parallel else forward_epilogue_serial)(out, blocks, b, code, chunk, st)
    else:
        blas.forward_product(x, W, out)
        no_blocks = np.empty((0, 1, 1), W.dtype)
        if parallel and blas.epilogues_share_cores():
            forward_epilogue(out, no_blocks, b, code, chunk, st)
        else:  # one thread: the whole width in one chunk, each row read once in order
            forward_epilogue_serial(out, no_blocks, b, code, W.shape[1], st)
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
    shared = parallel and (small or blas.epilogues_share_cores())
    (delta_bias if shared else delta_bias_serial)(
        grad_h, h, delta, b, code, lr, int(config.CPU_COL_CHUNK) if small or shared else W.shape[1],
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


def softmax_nll_unchecked(z, y, grad_z=None):
    """softmax_nll on validated arrays (used by the MLP)."""
    if grad_z is None:
        grad_z = np.empty_like(z)
    return float(softmax.softmax_nll(z, y, grad_z)), grad_z


def softmax_quadratic_unchecked(z, y, grad_z=None):
    """softmax_quadratic on validated arrays (used by the MLP)."""
    if grad_z is None:
        grad_z = np.empty_like(z)
    return float(softmax.softmax_quadratic(z, y, grad_z)), grad_z


def threading_layer():
    """The Numba threading layer in use (after the first parallel call)."""
    return numba.threading_layer()


# the public kernels, checked (fastff.kernels.checked): the same on every backend
(dense_forward, dense_backward_sgd, dense_backward_second_order, softmax_nll,
 softmax_quadratic) = public(__name__)
