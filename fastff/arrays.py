"""Which array library an array belongs to, and bringing one to the host: the one place that
tells NumPy arrays from CuPy arrays (``import fastff`` never imports CuPy; this module imports
it only when it meets one of its arrays)."""
import numpy as np


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
