"""Host arrays that start on a cache line, for the arrays fastff keeps (a model's weights,
workspaces and second-order rates) and the outputs its kernels allocate; on a GPU, the array
module's own.

NumPy only promises 16-byte alignment, and its large arrays come from ``mmap`` 16 bytes past a
page boundary: every other 32-byte vector of such an array straddles two cache lines, and a
load or store that does costs two. The small-batch step reads and writes all of W in vectors,
so where W starts shows in the step time (benchmarks/NOTES.md, "Arrays on cache lines").
Alignment changes no number: the kernels do the same arithmetic on any address.
"""
import ctypes
import math
import operator

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
