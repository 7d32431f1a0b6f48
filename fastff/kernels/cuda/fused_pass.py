"""A model's pass over its layers on the layer path, fused across them: the output layer's
forward with the cost in one launch (dense_forward_and_cost), then the plain-SGD backward pass
with two jobs in most launches (grad_x_and_update, two_updates). The layers' own kernels and
their arguments: :mod:`fastff.kernels.cuda.launchers`.
"""
import numpy as np

from ... import config
from ...errors import DeviceError
from ...losses import KERNELS
from .compiler import CTYPES
from .geometry import update_geometry
from .launchers import (Below, delta_launch, forward_unchecked, grad_x_fields, grad_x_launch,
                        layer_of, softmax_loss, split_k_fields, update_fields, update_launch)
from .runtimes import runtime

COSTS = {"nll": 0, "quadratic": 1}  # the costs' codes: softmax_loss.cu's fastff::Cost


def fuses_cost(dtype):
    """Whether the output layer's forward and the cost can share a launch
    (dense_forward_and_cost): in float32 (in float64 its shared memory would pass 48 KB), with
    GEMM tiles of at most config.CUDA_THREADS threads (the cost's shared arrays a thread)."""
    tm, tn, _ = config.CUDA_GEMM_TILE
    return np.dtype(dtype) == np.float32 and (tm // 4) * (tn // 4) <= config.CUDA_THREADS


def pairs_jobs(dtype):
    """Whether a layer's dC/dx and another layer's update can share a launch
    (grad_x_and_update): in float32 (in float64 the two jobs' registers would spill at 2 blocks
    an SM), where their blocks are the same shape: the GEMM tile square and as wide as the
    update's (config.CUDA_GEMM_TILE, config.CUDA_UPDATE_TILE: 64 each)."""
    tm, tn, _ = config.CUDA_GEMM_TILE
    return np.dtype(dtype) == np.float32 and tm == tn == config.CUDA_UPDATE_TILE


def output_and_backward(loss, x, y, hs, params, acts, lr, stats, ws, tf32=False):
    """A model's output layer, cost and plain-SGD backward pass: the output layer's forward
    (its logits into ``ws["h"][-1]``) with the cost and the output layer's bias step in the same
    launch (:func:`fuses_cost`, a linear output layer without statistics: its delta is the
    cost's gradient), then :func:`backward_layers`. ``loss``: the cost's name (fastff.losses);
    ``hs``: the hidden layers' outputs; ``stats``: each layer's BackwardStats or None; ``ws``: the
    plan's workspace of the batch; ``tf32`` as :func:`~.launchers.forward_unchecked` takes it.
    Returns the loss (a device scalar)."""
    top = len(params) - 1
    (W, b), z, grad_z = params[top], ws["h"][top], ws["grad_z"]
    below = hs[-1] if hs else x
    top_ready = acts[top] == "linear" and stats[top] is None
    if top_ready and fuses_cost(W.dtype):
        value = _forward_and_cost(loss, below, W, b, z, y, grad_z, lr, tf32)
    else:
        forward_unchecked(below, W, b, acts[top], out=z, tf32=tf32)
        value, _ = softmax_loss(KERNELS[loss], z, y, grad_z,
                                *((b, runtime().rate(lr, W.dtype)) if top_ready else ()))
    backward_layers(x, [*hs, z], params, acts, lr, stats, ws, top_ready, tf32)
    return value


def _forward_and_cost(loss, x, W, b, z, y, grad_z, lr, tf32):
    """The output layer's forward into ``z`` and the cost ``loss`` of it for labels ``y`` into
    ``grad_z``, with the layer's bias step, in one launch (dense_forward_and_cost: the launch's
    last tile then runs the cost; its arrival counter is the one after the tiles'). Returns the
    loss (a device scalar)."""
    rt, B, K, N, T, ct, (mode, _) = layer_of(x, W, tf32)
    name = f"dense_forward_and_cost<{ct}>"
    grid, block, split = split_k_fields(rt, name, B, K, N, T, False)
    value = rt.loss_slots()
    rt.launch_named(name, grid, block, x=x, W=W, b=b, out=z, products=np.int32(mode), **split,
                    cost=np.int32(COSTS[loss]), y=y, grad=grad_z, loss=value,
                    lr=rt.rate(lr, T))
    return value.reshape(())  # a view of the slot (a graph replay writes it again)


def backward_layers(x, hs, params, acts, lr, stats, ws, top_ready, tf32=False):
    """A model's plain-SGD backward pass, top layer first, after its cost (the cost's gradient
    in ``ws["grad_z"]``; ``top_ready``: it is the output layer's delta, and the layer's bias has
    taken its step, else the top layer's delta has its own launch). Each layer's dC/dx launch
    forms the delta of the layer below and steps its bias in its epilogue; and each layer's
    update runs in the dC/dx launch of the layer below it (grad_x_and_update, where
    :func:`pairs_jobs`): the update of W waits only for dC/dx to have read W, and the layer
    below's dC/dx reads another W. The last two updates share a launch (two_updates). So the top
    layer's dC/dx, L - 2 launches of two jobs and one of two updates: L launches (2 L - 2
    without pairs; one more where the top layer's delta has its own), where
    :func:`~.launchers.backward_unchecked` alone takes 3 L (and writes dC/dx for the next launch
    to read back). ``hs``: every layer's output, the logits last."""
    top = len(params) - 1
    grad_z, deltas = ws["grad_z"], ws["delta"]
    inputs = [x, *hs[:-1]]
    waiting = None  # the update of the layer above: it runs beside this layer's dC/dx
    for l in range(top, -1, -1):
        W, b = params[l]
        rt, B, K, N, T, ct, (mode, update_mode) = layer_of(inputs[l], W, tf32)
        rate = rt.rate(lr, T)
        delta = grad_z if l == top and top_ready else deltas[l]
        if l == top and not top_ready:
            delta_launch(rt, grad_z, hs[l], delta, b, rate, acts[l], stats[l])
        update = update_fields(rt, inputs[l], delta, W, rate, update_mode, stats[l])
        if l == 0:
            break
        below = Below(hs[l - 1], params[l - 1][1], acts[l - 1], stats[l - 1], deltas[l - 1])
        if waiting is not None and pairs_jobs(T):
            _grad_x_and_update(rt, delta, W, below, B, K, N, ct, mode, rate, waiting)
        else:
            if waiting is not None:
                update_launch(rt, waiting)
            grad_x_launch(rt, delta, W, below.delta, B, K, N, ct, mode, below=below, rate=rate)
        waiting = update
    if waiting is None:  # one layer
        update_launch(rt, update)
    else:
        _two_updates(rt, waiting, update)


def _two_updates(rt, first, second):
    """Two layers' updates (each :func:`~.launchers.update_fields`) in one launch (two_updates): the
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
    """An update's fields (:func:`~.launchers.update_fields`, with ``changed``) as the second
    job of a launch takes them: named up_..., all but those the two jobs ``shared``."""
    return {"up_" + k: v for k, v in dict(update, **changed).items() if k not in shared}


def _grad_x_and_update(rt, a, W, below, B, K, N, ct, mode, rate, update):
    """:func:`~.launchers.grad_x_launch` forming ``below``'s delta and another layer's ``update``
    (its fields) in one launch (grad_x_and_update), dC/dx's blocks and arrival counters first."""
    if not pairs_jobs(W.dtype):  # the kernel is empty for other tiles and types
        raise DeviceError(f"grad_x_and_update needs float32 and square tiles, not {W.dtype}, "
                          f"{config.CUDA_GEMM_TILE} and {config.CUDA_UPDATE_TILE}")
    _, _, up_blocks = update_geometry(int(update["K"]), int(update["N"]))
    grid, block, fields = grad_x_fields(rt, f"grad_x_fused<{ct}>", a, W, below.delta, B, K, N,
                                        mode, below, rate, beside=up_blocks)
    tiles = grid[0] * grid[1] + grid[0]  # the counters of dC/dx's arrivals
    counters = rt.counters(tiles + 1)
    fields.update(counters=counters, **_second_job(update, ("lr", "B"), counter=counters[tiles:]))
    rt.launch_named(f"grad_x_and_update<{ct}>", (grid[0] * grid[1] * grid[2] + up_blocks,),
                    block, **fields)
