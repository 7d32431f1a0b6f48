"""The unchecked CUDA kernels: each builds its launches' arguments by the names of the kernels'
parameters in the ``.cu`` sources (:meth:`~fastff.kernels.cuda.runtimes.Runtime.launch_named`)
and launches through the runtime. Their arguments were checked by
:mod:`fastff.kernels.checked` (or belong to a model that checked them once).
"""
import numpy as np

from ... import activations, config
from ...errors import DeviceError, InputError
from ...losses import KERNELS
from .compiler import CTYPES
from .geometry import columns_geometry, delta_geometry, gemm_geometry, update_geometry
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


def _layer(x, W, tf32):
    """(runtime, batch, n_in, n_out, dtype, C++ type, (layer products, update products)) of one
    layer's launches."""
    rt = runtime()
    if tf32:
        check_tf32(W.dtype, rt)
    return (rt, x.shape[0], x.shape[1], W.shape[1], W.dtype, CTYPES[W.dtype],
            products(W.dtype, tf32, rt))


def _split_k(rt, kernel, B, K, N, dtype, transposed, out=None):
    """(grid, block, fields) of one layer's fused split-K product (x @ W, or delta @ W^T when
    ``transposed``): the per-split partial products (a scratch buffer; with one split and
    ``out`` given, ``out`` itself), the tiles' arrival counters, the sizes and the chunk."""
    M, R, Nc = (B, N, K) if transposed else (B, K, N)
    grid, block, chunk, splits = gemm_geometry(M, R, Nc)
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
    rt, B, K, N, T, ct, (mode, _) = _layer(x, W, tf32)
    if out is None:
        out = rt.empty((B, N), T)
    name = f"dense_forward_fused<{ct}, {activations.CODES[activation]}>"
    grid, block, split = _split_k(rt, name, B, K, N, T, False)
    rt.launch_named(name, grid, block, x=x, W=W, b=b, out=out, products=_i32(mode), **split,
                    **_forward_stats(rt, stats, T, grid, N))
    return out


def backward_unchecked(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True, delta=None, prefetch=True, parallel=True, tf32=False,
                       delta_ready=False, below=None):
    """dense_backward_sgd on checked device arrays; ``delta`` is an optional (batch, n_out)
    workspace; ``tf32``: dC/dx on tensor cores in TF32 (float32 only); the products' kinds as
    :func:`products` says.

    A model's fused backward pass (:func:`backward_layers`) passes two more: ``delta_ready``:
    ``delta`` holds this layer's delta already and its bias has taken its step (in the dC/dx
    launch of the layer above), so step 1 is skipped and ``grad_h`` is not read; ``below``: the
    layer below (a :class:`Below`), whose step 1 then runs in this layer's dC/dx epilogue:
    dC/dx itself is not kept (returns None).
    """
    rt, B, K, N, T, ct, (mode, update_mode) = _layer(x, W, tf32)
    if delta is None:
        delta = rt.scratch("delta", B * N, T)[:B * N].reshape(B, N)
    rate = rt.rate(lr, T)
    if not delta_ready:
        _delta(rt, grad_h, h, delta, b, rate, activation, stats)
    if compute_grad_x and below is not None:
        _grad_x(rt, delta, W, below.delta, B, K, N, ct, mode, below=below, rate=rate)
        grad_x = None
    elif compute_grad_x:
        if grad_x is None:
            grad_x = rt.empty((B, K), T)
        _grad_x(rt, delta, W, grad_x, B, K, N, ct, mode)
    _update(rt, _update_fields(rt, x, delta, W, rate, update_mode, stats))
    return grad_x if compute_grad_x else None


def _delta(rt, grad_h, h, delta, b, rate, activation, stats):
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


def _update_fields(rt, x, delta, W, rate, mode, stats):
    """The fields of a plain-SGD update of W from its layer's input ``x`` and ``delta``
    (dense_backward_update's parameters), its products formed as ``mode`` says."""
    (B, K), N = x.shape, W.shape[1]
    return dict(x=x, delta=delta, W=W, lr=rate, B=_i32(B), K=_i32(K), N=_i32(N),
                products=_i32(mode), **_grad_w_sums(rt, K, N, stats))


def _update(rt, fields):
    """A plain-SGD update in its own launch (dense_backward_update)."""
    grid, block, _ = update_geometry(int(fields["K"]), int(fields["N"]))
    rt.launch_named(f"dense_backward_update<{CTYPES[fields['W'].dtype]}>", grid, block, **fields)


class Below:
    """The layer below in a fused backward pass (:func:`backward_unchecked`'s ``below``): its
    output ``h``, bias ``b``, activation, statistics (a BackwardStats, or None) and the
    ``delta`` array its step 1 fills."""

    __slots__ = ("h", "b", "activation", "stats", "delta")

    def __init__(self, h, b, activation, stats, delta):
        self.h, self.b, self.activation, self.stats, self.delta = h, b, activation, stats, delta


def pairs_jobs(dtype):
    """Whether a layer's dC/dx and another layer's update can share a launch
    (grad_x_and_update): in float32 (in float64 the two jobs' registers would spill at 2 blocks
    an SM), where their blocks are the same shape: the GEMM tile square and as wide as the
    update's (config.CUDA_GEMM_TILE, config.CUDA_UPDATE_TILE: 64 each)."""
    tm, tn, _ = config.CUDA_GEMM_TILE
    return np.dtype(dtype) == np.float32 and tm == tn == config.CUDA_UPDATE_TILE


def backward_layers(loss, x, y, hs, params, acts, lr, stats, ws, tf32=False):
    """A model's cost and plain-SGD backward pass, top layer first. Each layer's dC/dx launch
    forms the delta of the layer below and steps its bias in its epilogue; the cost's launch
    steps the output layer's bias (its delta is the cost's gradient: a linear layer without
    statistics; otherwise the top layer's delta has its own launch); and each layer's update
    runs in the dC/dx launch of the layer below it (grad_x_and_update, where
    :func:`pairs_jobs`): the update of W waits only for dC/dx to have read W, and the layer
    below's dC/dx reads another W. The last two updates share a launch (two_updates). So the
    cost, the top layer's dC/dx, L - 2 launches of two jobs and one of two updates: L + 1
    launches (2 L - 1 without pairs; one more where the top layer's delta has its own), where
    the cost and :func:`backward_unchecked` alone take 1 + 3 L (and write dC/dx for the next
    launch to read back). ``loss``: the cost's name (fastff.losses); ``hs``: the layers'
    outputs; ``stats``: each layer's BackwardStats or None; ``ws``: the plan's workspace of the
    batch. Returns the loss (a device scalar)."""
    top = len(params) - 1
    kernel = KERNELS[loss]
    grad_z, deltas = ws["grad_z"], ws["delta"]
    top_ready = acts[top] == "linear" and stats[top] is None
    T = params[top][0].dtype
    value, _ = _softmax_loss(kernel, hs[top], y, grad_z, *(
        (params[top][1], runtime().rate(lr, T)) if top_ready else ()))
    inputs = [x, *hs[:-1]]
    waiting = None  # the update of the layer above: it runs beside this layer's dC/dx
    for l in range(top, -1, -1):
        W, b = params[l]
        rt, B, K, N, T, ct, (mode, update_mode) = _layer(inputs[l], W, tf32)
        rate = rt.rate(lr, T)
        delta = grad_z if l == top and top_ready else deltas[l]
        if l == top and not top_ready:
            _delta(rt, grad_z, hs[l], delta, b, rate, acts[l], stats[l])
        update = _update_fields(rt, inputs[l], delta, W, rate, update_mode, stats[l])
        if l == 0:
            break
        below = Below(hs[l - 1], params[l - 1][1], acts[l - 1], stats[l - 1], deltas[l - 1])
        if waiting is not None and pairs_jobs(T):
            _grad_x_and_update(rt, delta, W, below, B, K, N, ct, mode, rate, waiting)
        else:
            if waiting is not None:
                _update(rt, waiting)
            _grad_x(rt, delta, W, below.delta, B, K, N, ct, mode, below=below, rate=rate)
        waiting = update
    if waiting is None:  # one layer
        _update(rt, update)
    else:
        _two_updates(rt, waiting, update)
    return value


def _two_updates(rt, first, second):
    """Two layers' updates (each :func:`_update_fields`) in one launch (two_updates): the
    first's blocks, then the second's, each with its own block sums and arrival counter."""
    (_, block, blocks), (_, _, up_blocks) = (update_geometry(int(u["K"]), int(u["N"]))
                                             for u in (first, second))
    counters = rt.counters(2)
    parts = rt.scratch("grad_w_parts", 2 * (blocks + up_blocks), np.float64)
    fields = dict(first, gw_parts=parts, counter=counters, **_second_job(
        second, ("lr", "B", "products"), gw_parts=parts[2 * blocks:], counter=counters[1:]))
    rt.launch_named(f"two_updates<{CTYPES[first['W'].dtype]}>", (blocks + up_blocks,), block,
                    **fields)


def _second_job(update, shared, **changed):
    """An update's fields (:func:`_update_fields`, with ``changed``) as the second job of a
    launch takes them: named up_..., all but those the two jobs ``shared``."""
    return {"up_" + k: v for k, v in dict(update, **changed).items() if k not in shared}


def _grad_x_and_update(rt, a, W, below, B, K, N, ct, mode, rate, update):
    """:func:`_grad_x` forming ``below``'s delta and another layer's ``update`` (its fields) in
    one launch (grad_x_and_update), dC/dx's blocks and arrival counters first."""
    if not pairs_jobs(W.dtype):  # the kernel is empty for other tiles and types
        raise DeviceError(f"grad_x_and_update needs float32 and square tiles, not {W.dtype}, "
                          f"{config.CUDA_GEMM_TILE} and {config.CUDA_UPDATE_TILE}")
    grid, block, fields = _grad_x_fields(rt, f"grad_x_fused<{ct}>", a, W, below.delta, B, K, N,
                                         mode, below, rate)
    tiles = grid[0] * grid[1] + grid[0]  # the counters of dC/dx's arrivals
    counters = rt.counters(tiles + 1)
    _, _, up_blocks = update_geometry(int(update["K"]), int(update["N"]))
    fields.update(counters=counters, **_second_job(update, ("lr", "B"), counter=counters[tiles:]))
    rt.launch_named(f"grad_x_and_update<{ct}>", (grid[0] * grid[1] * grid[2] + up_blocks,),
                    block, **fields)


def _grad_x(rt, a, W, out, B, K, N, ct, mode, below=None, rate=None):
    """out = a @ W^T in one launch (split-K partial products, added in a fixed order by the
    last block of each tile; one split is written into ``out`` directly), its products formed
    as ``mode`` says. With ``below`` (a :class:`Below`; ``rate``: the device learning rate),
    out = below.delta = (a @ W^T) f'(below.h) instead, with dense_backward_delta's bias step
    and statistics (grad_x_fused's delta_epilogue)."""
    name = f"grad_x_fused<{ct}>"
    grid, block, fields = _grad_x_fields(rt, name, a, W, out, B, K, N, mode, below, rate)
    rt.launch_named(name, grid, block, **fields)


def _grad_x_fields(rt, name, a, W, out, B, K, N, mode, below=None, rate=None):
    """(grid, block, fields) of :func:`_grad_x`'s launch; ``name``: its kernel's, whose split
    partial products get their own scratch."""
    grid, block, split = _split_k(rt, name, B, K, N, W.dtype, True,
                                  out if below is None else None)
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
    rt, B, K, N, T, ct, (mode, _) = _layer(x, W, tf32)
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
        _grad_x(rt, delta, W, grad_x, B, K, N, ct, mode)
        if hessian:
            if curv_x is None:
                curv_x = rt.empty((B, K), T)
            w_sq = rt.scratch("rates_w_sq", K * N, T)[:K * N].reshape(K, N)
            grid, block = columns_geometry(K * N, rt.sms)
            rt.launch_named(f"square_into<{ct}>", grid, block, a=W, out=w_sq, count=_i64(K * N))
            _grad_x(rt, q, w_sq, curv_x, B, K, N, ct, mode)
    grid, block, _ = update_geometry(K, N)
    rt.launch_named(f"second_order_update<{ct}>", grid, block, x=x, delta=delta, q=q, W=W,
                    avg=rates.W, B=_i32(B), K=_i32(K), N=_i32(N), **hyper,
                    **_grad_w_sums(rt, K, N, stats))
    rates.steps += 1
    return ((grad_x if compute_grad_x else None),
            (curv_x if compute_grad_x and hessian else None))


def _softmax_loss(kernel, z, y, grad_z, b=None, rate=None):
    """The cost ``kernel`` of logits z and labels y, its gradient into grad_z; with ``b`` (and
    ``rate``, the device learning rate) the output layer's bias step too, b -= lr grad_z.sum(0)
    (a linear output layer, whose delta is grad_z: :func:`backward_layers`)."""
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
    return _softmax_loss("softmax_nll", z, y, grad_z)


def softmax_quadratic_unchecked(z, y, grad_z=None):
    """softmax_quadratic on checked device arrays; the loss stays a 0-d device array."""
    return _softmax_loss("softmax_quadratic", z, y, grad_z)
