"""Which array library an array belongs to, and bringing one to the host: the one place that
tells NumPy arrays from CuPy arrays (``import fastff`` never imports CuPy; this module imports
it only when it meets one of its arrays), and that reads another library's arrays (PyTorch
tensors) through DLPack, sharing their memory."""
import sys

import numpy as np

from .errors import DeviceError, InputError


def on_device(a):
    """True for a CuPy array (GPU memory), False for anything else."""
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(a):
    """numpy, or cupy for a CuPy array."""
    if on_device(a):
        import cupy
        return cupy
    return np


def to_host(a):
    """``a`` as a NumPy array: a copy from the GPU, the array itself on the host."""
    return a.get() if on_device(a) else np.asarray(a)


# -- arrays of other libraries (PyTorch tensors, ...), read through DLPack without copies -----
_DLPACK_HOST, _DLPACK_CUDA = 1, 2  # DLDeviceType (dlpack.h): kDLCPU, kDLCUDA


def foreign(a):
    """True for an array of another library that exports DLPack (``__dlpack__``): a PyTorch
    tensor, say; False for NumPy and CuPy arrays and for everything else."""
    return (not isinstance(a, np.ndarray) and hasattr(a, "__dlpack__")
            and hasattr(a, "__dlpack_device__") and not on_device(a))


def from_foreign(name, a):
    """The NumPy (host memory) or CuPy (CUDA memory) array that shares ``a``'s memory.

    A tensor that requires grad is refused: fastff's kernels are not recorded by autograd, so
    the caller detaches it (which shares memory) and says so. Memory DLPack cannot hand over
    without a copy (bfloat16, another kind of device) is refused too.
    """
    kind = f"{type(a).__module__.split('.')[0]}.{type(a).__name__}"
    if getattr(a, "requires_grad", False):
        raise InputError(f"{name} is a {kind} that requires grad: fastff's kernels are not "
                         f"recorded by autograd; pass {name}.detach() (it shares the memory)")
    try:
        device_type = int(a.__dlpack_device__()[0])
        if device_type == _DLPACK_HOST:
            return np.from_dlpack(a)
        if device_type == _DLPACK_CUDA:
            try:
                import cupy
            except ImportError:
                raise DeviceError(f"{name} is a {kind} in CUDA memory; fastff's CUDA kernels "
                                  "need CuPy: pip install 'fastff[cuda]'") from None
            return cupy.from_dlpack(a)
    except (BufferError, TypeError, RuntimeError, ValueError) as e:
        raise InputError(f"{name}: this {kind} ({getattr(a, 'dtype', '?')}) cannot be shared "
                         f"with fastff's kernels without a copy: {e}") from None
    raise DeviceError(f"{name} is a {kind} on a device fastff has no kernels for (DLPack "
                      f"device type {device_type}); move it to the CPU or to a CUDA GPU first")


def shared(name, a):
    """``a`` read through :func:`from_foreign` where it is a foreign array; else ``a``."""
    return from_foreign(name, a) if foreign(a) else a


def like(caller, a):
    """``a`` (a NumPy or CuPy array) as an array of ``caller``'s library, sharing memory: a
    PyTorch tensor for a tensor. ``a`` itself where ``caller`` is not a foreign array or its
    library has no ``from_dlpack``."""
    if a is None or not foreign(caller):
        return a
    library = sys.modules.get(type(caller).__module__.split(".")[0])
    convert = getattr(library, "from_dlpack", None)
    return a if convert is None else convert(a)
