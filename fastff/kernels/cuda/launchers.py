"""The unchecked CUDA kernels: each builds its launches' arguments by the names of the kernels'
parameters in the ``.cu`` sources (:meth:`~fastff.kernels.cuda.runtimes.Runtime.launch_named`)
and launches through the runtime. Their arguments were checked by
:mod:`fastff.kernels.checked` (or belong to a model that checked them once).
"""
import numpy as np

from ... import activations, config
from ...errors import DeviceError, InputError
from .compiler import CTYPES
from .geometry import (columns_geometry, delta_geometry, gemm_geometry, gemm_geometry_beside,
                       update_geometry)
from .runtimes import runtime

_i32, _i64, _f64 = np.int32, np.int64, np.float64


def array_module():
    """The array module of these kernels' arrays: the runtime's (CuPy on a GPU); creating the
    runtime says what is missing where there is none."""
    return runtime().xp


# The kernels' ``products`` argument (common.cuh, enum Products): how a product's terms are
# formed.
FP32, TF32, SPLIT_TF32 = 0, 1, 2


def _tensor_core_tiles(update=False):
    """Whether the GEMM tiles (and with ``update`` the update tile, which is square) can be
    dealt to warps of 32 x 16 outputs formed by 16 x 8 x 8 tensor-core products: rows a
    multiple of 32, columns of 16, depth of 8."""
    tm, tn, tk = config.CUDA_GEMM_TILE
    return not (tm % 32 or tn % 16 or tk % 8 or (update and config.CUDA_UPDATE_TILE % 32))


def check_tf32(dtype, rt=None):
    """Refuse TF32 products for anything but float32, with GEMM tiles that the tensor-core
    path cannot cover (rows a multiple of 32, columns of 16, depth of 8: a warp forms 32 x 16
    outputs from 16 x 8 x 8 products), or on runtime ``rt``'s GPU where it has no TF32."""
    if rt is not None and not rt.has_tf32():
        raise DeviceError(f"tf32=True needs TF32 tensor cores (compute capability 8.0 or newer); "
                          f"this GPU is {rt.compute_capability()}")
    if np.dtype(dtype) != np.float32:
        raise InputError(f"tf32=True rounds float32 operands to TF32 on tensor cores; the "
                         f"parameters are {np.dtype(dtype).name}")
    if not _tensor_core_tiles():
        raise InputError(f"tf32=True needs config.CUDA_GEMM_TILE rows a multiple of 32, columns "
                         f"of 16 and depth of 8; it is {config.CUDA_GEMM_TILE}")


def products(dtype, tf32, rt):
    """How one layer's products are formed: ``(layer products, update products)``, each FP32,
    TF32 or SPLIT_TF32. ``tf32=True`` (checked by :func:`check_tf32`) rounds the forward's and
    dC/dx's operands to TF32; otherwise float32 products run in 3xTF32 where
    ``config.CUDA_SPLIT_TF32`` asks for it, the GPU has TF32 and the tiles allow it, and on
    CUDA cores elsewhere (float64 always)."""
    split = (bool(config.CUDA_SPLIT_TF32) and np.dtype(dtype) == np.float32
             and _tensor_core_tiles(update=True) and rt.has_tf32())
    tensor = SPLIT_TF32 if split else FP32
    return (TF32 if tf32 else tensor), tensor


def _dummies(rt):
    """Stand-ins for statistics arrays a launch without statistics never touches."""
    return rt.scratch("no_i64", 2, np.int64), rt.scratch("no_f64", 2, np.float64)


def _stand_in(rt, dtype):
    """A stand-in for a parameter array (a bias, a rate) that a launch's mode never touches."""
    return rt.scratch(f"no_{CTYPES[np.dtype(dtype)]}", 1, dtype)


def layer_of(x, W, tf32):
    """(runtime, batch, n_in, n_out, dtype, C++ type, (layer products, update products)) of one
    layer's launches."""
    rt = runtime()
    if tf32:
        check_tf32(W.dtype, rt)
    return (rt, x.shape[0], x.shape[1], W.shape[1], W.dtype, CTYPES[W.dtype],
            products(W.dtype, tf32, rt))


def split_k_fields(rt, kernel, B, K, N, dtype, transposed, out=None, beside=0):
    """(grid, block, fields) of one layer's fused split-K product (x @ W, or delta @ W^T when
    ``transposed``): the per-split partial products (a scratch buffer; with one split and
    ``out`` given, ``out`` itself), the tiles' arrival counters, the sizes and the chunk;
    ``beside``: the blocks of another job in the same launch (gemm_geometry_beside)."""
    M, R, Nc = (B, N, K) if transposed else (B, K, N)
    grid, block, chunk, splits = (gemm_geometry_beside(M, R, Nc, beside) if beside
                                  else gemm_geometry(M, R, Nc))
    parts = out if splits == 1 and out is not None else rt.scratch(kernel, splits * M * Nc, dtype)
    return grid, block, dict(parts=parts, counters=rt.counters(grid[0] * grid[1] + grid[0]),
                             B=_i32(B), K=_i32(K), N=_i32(N), chunk=_i32(chunk))


def _forward_stats(rt, stats, T, grid, N):
    """The statistics fields of a dense_forward_fused launch (stand-ins without ``stats``)."""
    no_i64, no_f64 = _dummies(rt)
    if stats is None:
        return dict(want_stats=_i32(0), low=T.type(0), high=T.type(0), sat_low=no_i64,
                    sat_high=no_i64, total=no_f64, total_sq=no_f64, hist=no_i64, bins=_i32(1),
                    hist_lo=_f64(0), hist_scale=_f64(0), rows=no_i64, col_parts=no_f64)
    bins = int(stats.hist.shape[0])  # the array's own length: what the kernel may index
    if bins > config.CUDA_MAX_BINS:
        raise InputError(f"the CUDA kernels count at most config.CUDA_MAX_BINS = "
                         f"{config.CUDA_MAX_BINS} histogram bins, got {bins}")
    return dict(want_stats=_i32(1), low=T.type(stats.low), high=T.type(stats.high),
                sat_low=stats.sat_low, sat_high=stats.sat_high, total=stats.total,
                total_sq=stats.total_sq, hist=stats.hist, bins=_i32(bins),
                hist_lo=_f64(stats.hist_lo), hist_scale=_f64(bins / (stats.hist_hi - stats.hist_lo)),
                rows=stats.rows, col_parts=rt.scratch("column_parts", grid[1] * 4 * N, np.float64))


def _delta_stats(rt, stats):
    """The dC/ds statistics fields of a delta (or rates' columns) launch."""
    no_i64, no_f64 = _dummies(rt)
    want = stats is not None
    return dict(want_stats=_i32(want), d_total=stats.delta_total if want else no_f64,
                d_total_sq=stats.delta_total_sq if want else no_f64,
                counts=stats.counts if want else no_i64)


def _grad_w_sums(rt, K, N, stats):
    """The dC/dW fields of an update launch: whether to sum dC/dW, the blocks' partial sums,
    their arrival counter and the totals."""
    want = stats is not None and stats.weight_grad
    _, _, blocks = update_geometry(K, N)
    no_f64 = _dummies(rt)[1]
    return dict(want_gw=_i32(want), gw_parts=rt.scratch("grad_w_parts", 2 * blocks, np.float64),
                counter=rt.counters(1), grad_w_total=stats.grad_w_total if want else no_f64,
                grad_w_total_sq=stats.grad_w_total_sq if want else no_f64)


def forward_unchecked(x, W, b, activation, out=None, stats=None, prefetch=True,
                      parallel=True, tf32=False):
    """dense_forward on checked device arrays (``prefetch`` and ``parallel``, CPU hints,
    mean nothing here; ``tf32``: the product on tensor cores in TF32, float32 only; without
    it, as :func:`products` says)."""
    rt, B, K, N, T, ct, (mode, _) = layer_of(x, W, tf32)
    if out is None:
        out = rt.empty((B, N), T)
    name = f"dense_forward_fused<{ct}, {activations.CODES[activation]}>"
    grid, block, split = split_k_fields(rt, name, B, K, N, T, False)
    rt.launch_named(name, grid, block, x=x, W=W, b=b, out=out, products=_i32(mode), **split,
                    **_forward_stats(rt, stats, T, grid, N))
    return out


def backward_unchecked(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True, delta=None, prefetch=True, parallel=True, tf32=False):
    """dense_backward_sgd on checked device arrays; ``delta`` is an optional (batch, n_out)
    workspace; ``tf32``: dC/dx on tensor cores in TF32 (float32 only); the products' kinds as
    :func:`products` says. (A model's step fuses the layers' launches instead:
    :func:`~.fused_pass.output_and_backward`.)"""
    rt, B, K, N, T, ct, (mode, update_mode) = layer_of(x, W, tf32)
    if delta is None:
        delta = rt.scratch("delta", B * N, T)[:B * N].reshape(B, N)
    rate = rt.rate(lr, T)
    delta_launch(rt, grad_h, h, delta, b, rate, activation, stats)
    if compute_grad_x:
        if grad_x is None:
            grad_x = rt.empty((B, K), T)
        grad_x_launch(rt, delta, W, grad_x, B, K, N, ct, mode)
    update_launch(rt, update_fields(rt, x, delta, W, rate, update_mode, stats))
    return grad_x if compute_grad_x else None


def delta_launch(rt, grad_h, h, delta, b, rate, activation, stats):
    """Step 1 of a layer in its own launch: delta = grad_h f'(h), the bias step and the dC/ds
    statistics (dense_backward_delta)."""
    B, N = delta.shape
    grid, block = delta_geometry(B, N)
    rt.launch_named(f"dense_backward_delta<{CTYPES[delta.dtype]}, "
                    f"{activations.CODES[activation]}>", grid, block, grad_h=grad_h, h=h,
                    delta=delta, b=b, lr=rate, B=_i32(B), N=_i32(N),
                    counters=rt.counters(grid[0]),
                    col_parts=rt.scratch("column_parts", grid[1] * 3 * N, np.float64),
                    **_delta_stats(rt, stats))


def update_fields(rt, x, delta, W, rate, mode, stats):
    """The fields of a plain-SGD update of W from its layer's input ``x`` and ``delta``
    (dense_backward_update's parameters), its products formed as ``mode`` says."""
    (B, K), N = x.shape, W.shape[1]
    return dict(x=x, delta=delta, W=W, lr=rate, B=_i32(B), K=_i32(K), N=_i32(N),
                products=_i32(mode), **_grad_w_sums(rt, K, N, stats))


def update_launch(rt, fields):
    """A plain-SGD update in its own launch (dense_backward_update)."""
    grid, block, _ = update_geometry(int(fields["K"]), int(fields["N"]))
    rt.launch_named(f"dense_backward_update<{CTYPES[fields['W'].dtype]}>", grid, block, **fields)


class Below:
    """The layer below in a fused backward pass (:func:`grad_x_launch`'s ``below``): its
    output ``h``, bias ``b``, activation, statistics (a BackwardStats, or None) and the
    ``delta`` array its step 1 fills."""

    __slots__ = ("h", "b", "activation", "stats", "delta")

    def __init__(self, h, b, activation, stats, delta):
        self.h, self.b, self.activation, self.stats, self.delta = h, b, activation, stats, delta


def grad_x_launch(rt, a, W, out, B, K, N, ct, mode, below=None, rate=None):
    """out = a @ W^T in one launch (split-K partial products, added in a fixed order by the
    last block of each tile; one split is written into ``out`` directly), its products formed
    as ``mode`` says. With ``below`` (a :class:`Below`; ``rate``: the device learning rate),
    out = below.delta = (a @ W^T) f'(below.h) instead, with dense_backward_delta's bias step
    and statistics (grad_x_fused's delta_epilogue)."""
    name = f"grad_x_fused<{ct}>"
    grid, block, fields = grad_x_fields(rt, name, a, W, out, B, K, N, mode, below, rate)
    rt.launch_named(name, grid, block, **fields)


def grad_x_fields(rt, name, a, W, out, B, K, N, mode, below=None, rate=None, beside=0):
    """(grid, block, fields) of :func:`grad_x_launch`'s launch; ``name``: its kernel's, whose
    split partial products get their own scratch; ``beside`` as :func:`split_k_fields`."""
    grid, block, split = split_k_fields(rt, name, B, K, N, W.dtype, True,
                                        out if below is None else None, beside)
    no_i64, no_f64 = _dummies(rt)
    if below is None:
        no_t = _stand_in(rt, W.dtype)
        fused = dict(act=_i32(-1), h=no_t, b=no_t, lr=no_t, col_parts=no_f64,
                     want_stats=_i32(0), d_total=no_f64, d_total_sq=no_f64, counts=no_i64)
    else:
        fused = dict(act=_i32(activations.CODES[below.activation]), h=below.h, b=below.b,
                     lr=rate, col_parts=rt.scratch("column_parts", grid[1] * 3 * K, np.float64),
                     **_delta_stats(rt, below.stats))
    return grid, block, dict(delta=a, W=W, out=out, products=_i32(mode), **split, **fused)


def second_order_unchecked(x, h, W, b, grad_h, activation, lr, rates, curv_h=None, grad_x=None,
                           curv_x=None, stats=None, compute_grad_x=True, delta=None,
                           prefetch=True, parallel=True, tf32=False):
    """dense_backward_second_order on checked device arrays; ``delta`` is an optional
    (batch, n_out) workspace; ``tf32``: dC/dx (and the curvature's product) in TF32; the
    update (with its rates) on CUDA cores."""
    rt, B, K, N, T, ct, (mode, _) = layer_of(x, W, tf32)
    hessian = rates.method == "diag_hessian"
    if delta is None:
        delta = rt.scratch("delta", B * N, T)[:B * N].reshape(B, N)
    q = rt.scratch("rates_q", B * N, T)[:B * N].reshape(B, N)
    # lr / (1 + A / damping) as lr * damping / (damping + A), as the CPU's
    hyper = dict(lr=T.type(lr * rates.damping), hessian=_i32(hessian),
                 damping=T.type(rates.damping), keep=T.type(rates.decay),
                 corr=T.type(rates.correction()))
    grid, block = columns_geometry(N, rt.sms)
    rt.launch_named(f"second_order_columns<{ct}, {activations.CODES[activation]}>", grid, block,
                    # grad_variance reads no curvature: h stands in (not q, which is written)
                    grad_h=grad_h, h=h, curv_h=curv_h if hessian else h, delta=delta, q=q, b=b,
                    avg_b=rates.b, B=_i32(B), N=_i32(N), **hyper, **_delta_stats(rt, stats))
    if compute_grad_x:
        if grad_x is None:
            grad_x = rt.empty((B, K), T)
        grad_x_launch(rt, delta, W, grad_x, B, K, N, ct, mode)
        if hessian:
            if curv_x is None:
                curv_x = rt.empty((B, K), T)
            w_sq = rt.scratch("rates_w_sq", K * N, T)[:K * N].reshape(K, N)
            grid, block = columns_geometry(K * N, rt.sms)
            rt.launch_named(f"square_into<{ct}>", grid, block, a=W, out=w_sq, count=_i64(K * N))
            grad_x_launch(rt, q, w_sq, curv_x, B, K, N, ct, mode)
    grid, block, _ = update_geometry(K, N)
    rt.launch_named(f"second_order_update<{ct}>", grid, block, x=x, delta=delta, q=q, W=W,
                    avg=rates.W, B=_i32(B), K=_i32(K), N=_i32(N), **hyper,
                    **_grad_w_sums(rt, K, N, stats))
    rates.steps += 1
    return ((grad_x if compute_grad_x else None),
            (curv_x if compute_grad_x and hessian else None))


def softmax_loss(kernel, z, y, grad_z, b=None, rate=None):
    """The cost ``kernel`` of logits z and labels y, its gradient into grad_z; with ``b`` (and
    ``rate``, the device learning rate) the output layer's bias step too, b -= lr grad_z.sum(0)
    (a linear output layer, whose delta is grad_z: :func:`~.fused_pass.backward_layers`)."""
    rt = runtime()
    B, K = z.shape
    if grad_z is None:
        grad_z = rt.empty(z.shape, z.dtype)
    loss = rt.loss_slots()
    bias = (dict(b=b, lr=rate, bias_step=_i32(1)) if b is not None else
            dict(b=_stand_in(rt, z.dtype), lr=_stand_in(rt, z.dtype), bias_step=_i32(0)))
    rt.launch_named(f"{kernel}<{CTYPES[z.dtype]}>", (1, 1, 1), (int(config.CUDA_THREADS), 1, 1),
                    z=z, y=y, grad=grad_z, loss=loss, B=_i32(B), K=_i32(K), **bias)
    return loss.reshape(()), grad_z  # a view of the slot (a graph replay writes it again)


def softmax_nll_unchecked(z, y, grad_z=None):
    """softmax_nll on checked device arrays; the loss comes back as a 0-d device array (no
    synchronization)."""
    return softmax_loss("softmax_nll", z, y, grad_z)


def softmax_quadratic_unchecked(z, y, grad_z=None):
    """softmax_quadratic on checked device arrays; the loss stays a 0-d device array."""
    return softmax_loss("softmax_quadratic", z, y, grad_z)
