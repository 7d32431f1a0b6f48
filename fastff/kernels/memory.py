"""Host arrays that start on a cache line, for the arrays fastff keeps (a model's weights,
workspaces and second-order rates) and the outputs its kernels allocate; on a GPU, the array
module's own.

NumPy only promises 16-byte alignment, and its large arrays come from ``mmap`` 16 bytes past a
page boundary: every other 32-byte vector of such an array straddles two cache lines, and a
load or store that does costs two. The small-batch step reads and writes all of W in vectors,
so where W starts shows in the step time (benchmarks/NOTES.md, "Arrays on cache lines").
Alignment changes no number: the kernels do the same arithmetic on any address.

A kernel's temporary that every call needs again (the small-batch forward's partial products)
is kept per thread (:func:`scratch`) rather than allocated per call: a fresh array of more than
128 KiB can come from ``mmap`` and cost a page fault per 4 KiB on first touch, every call, in a
process whose ``malloc`` keeps a fixed ``mmap`` threshold (as Dask's workers are started, with
``MALLOC_TRIM_THRESHOLD_``; benchmarks/NOTES.md, "Page faults in Dask workers").
"""
import ctypes
import math
import operator
import threading

import numpy as np

from .. import config
from ..errors import InputError


def _alignment():
    value = config.CPU_ARRAY_ALIGN
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (value - 1):
        raise InputError(f"fastff.config.CPU_ARRAY_ALIGN is {value!r}; it must be a power of two "
                         "(bytes)")
    return value


def empty(shape, dtype, xp=np):
    """An uninitialized C-contiguous array whose data starts on a multiple of
    ``config.CPU_ARRAY_ALIGN`` bytes (NumPy), or ``xp.empty`` for another array module (CuPy
    places its own arrays).

    Parameters
    ----------
    shape : int or tuple of int
    dtype : data-type
    xp : module, optional
        The array module: NumPy (default) or CuPy.

    Returns
    -------
    ndarray
        On the host, a view into a slightly larger buffer, which it keeps alive (``.base``).
    """
    if xp is not np:
        return xp.empty(shape, dtype)
    dtype = np.dtype(dtype)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (operator.index(shape),)
    align = _alignment()
    buf = np.empty(math.prod(shape) * dtype.itemsize + align, np.uint8)
    # the address from ctypes directly: a third of the time of ndarray.ctypes.data
    start = -ctypes.addressof(ctypes.c_char.from_buffer(buf)) % align
    return np.ndarray(shape, dtype, buf, start)


def zeros(shape, dtype, xp=np):
    """:func:`empty`, filled with zeros."""
    a = empty(shape, dtype, xp)
    a.fill(0)
    return a


_SCRATCH = threading.local()


def scratch(name, shape, dtype):
    """An uninitialized C-contiguous array that starts on a cache line, kept for the calling
    thread under ``name`` and handed back (same memory, contents not kept) by its next call with
    that name: a temporary a kernel needs on every call, allocated once per thread and grown
    when a call needs more.

    Parameters
    ----------
    name : str
        Which temporary: two names never share memory, one name is one array per thread.
    shape : tuple of int
    dtype : data-type

    Returns
    -------
    ndarray
        A view of the thread's buffer, valid until this thread's next call with ``name``.
    """
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    buffers = _SCRATCH.__dict__
    buf = buffers.get(name)
    if buf is None or buf.nbytes < nbytes:
        buf = buffers[name] = empty(max(nbytes, dtype.itemsize), np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)
