"""Shapeset-3x2's counter stream rendered on the GPU: the launch of ``shapeset.cu``.

The twin of :func:`fastff.data.shapeset.render_counter` (same arguments, same bits); the
dataset calls it for a model that trains on the GPU, so that batches never cross the bus.
"""
import numpy as np

from .compiler import SHAPESET_THREADS
from .runtimes import require_on_device, runtime
from ...checks import writable_c_contiguous
from ...errors import InputError
from ...shapeset_spec import angle_table, check_stream

_MAX_GRID = 65_535  # blocks of one launch; the kernel loops over the rest


def render(key, first, n, balanced, scale, x=None, labels=None, n_objects=None):
    """Images ``first .. first + n - 1`` of the counter stream ``key`` (two 32-bit words) on
    the device, as float32 ``level * mul + add`` for ``scale = (mul, add)``.

    Returns (x (n, 1024) float32, labels (n,) int64, n_objects (n,) int64), arrays of the
    runtime (CuPy on a GPU); ``x``, ``labels`` and ``n_objects`` may be given to be filled.
    """
    check_stream(key, first, n)
    if n >= 2 ** 31:  # the kernel counts images in an int
        raise InputError(f"at most 2^31 - 1 images a launch, got {n}")
    rt = runtime()
    xp = rt.xp
    store = rt.__dict__.setdefault("_shapeset_table", {})
    table = store.get(rt.stream())
    if table is None:  # once per runtime and stream: the cosines both twins read
        table = store[rt.stream()] = xp.asarray(angle_table())
    x = rt.empty((n, 1024), np.float32) if x is None else x
    labels = rt.empty(n, np.int64) if labels is None else labels
    n_objects = rt.empty(n, np.int64) if n_objects is None else n_objects
    require_on_device(rt, x=x, labels=labels, n_objects=n_objects)
    for name, a, shape, dtype in (("x", x, (n, 1024), np.float32),
                                  ("labels", labels, (n,), np.int64),
                                  ("n_objects", n_objects, (n,), np.int64)):
        if a.shape != shape or a.dtype != dtype:  # the kernel writes them unchecked
            raise InputError(f"{name} must be {np.dtype(dtype).name} of shape {shape}, got "
                             f"{a.dtype} of shape {tuple(a.shape)}")
        writable_c_contiguous(name, a)
    if n:
        rt.launch_named("shapeset_render", (min(n, _MAX_GRID),), (SHAPESET_THREADS,),
                        k0=np.uint32(key[0]), k1=np.uint32(key[1]), first=np.uint64(first),
                        n=np.int32(n), balanced=np.int32(bool(balanced)), table=table,
                        mul=np.float32(scale[0]), add=np.float32(scale[1]), x=x, labels=labels,
                        n_objects=n_objects)
    return x, labels, n_objects


def render_batch(buffers, key, first, n, balanced, scale):
    """(x, labels) of :func:`render` into buffers kept in the dict ``buffers`` (the caller's,
    one set per batch size and stream, made on first use): a dataset's training batches on the
    device without an allocation per batch (valid until the next call)."""
    slot = (n, runtime().stream())
    if slot not in buffers:
        buffers[slot] = render(key, first, n, balanced, scale)
    else:
        render(key, first, n, balanced, scale, *buffers[slot])
    return buffers[slot][:2]
