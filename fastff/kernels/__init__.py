"""The fused kernels, dispatched through one registry keyed by (op, backend).

Backends: ``reference`` (NumPy, the spec), ``cpu`` (Numba), ``cuda`` (CuPy raw kernels, when
available). The functions below pick the backend from the array type: NumPy arrays run on the
Numba kernels, CuPy arrays on the CUDA kernels. Arrays are never copied between host and device
behind your back: mixing them is an error.

>>> import numpy as np, fastff
>>> x = np.ones((10, 4), np.float32); W = np.zeros((4, 3), np.float32); b = np.zeros(3, np.float32)
>>> fastff.kernels.dense_forward(x, W, b, "tanh").shape
(10, 3)
"""
import numpy as np

from . import cpu, reference
from .backend import Backend, CPUPlan
from .checked import CheckedKernels
from .rates import LayerRates
from .stats import BackwardStats, ForwardStats
from ..arrays import on_device
from ..checks import choose
from ..errors import DeviceError, InputError

OPS = Backend.OPS

# The one registry: backend objects by name (fastff.kernels.backend).
_BACKENDS = {}


def register_backend(backend):
    """Register a :class:`~fastff.kernels.backend.Backend` under its name."""
    if not isinstance(backend, Backend):
        raise InputError(f"expected a fastff Backend, got {type(backend).__name__}")
    _BACKENDS[backend.name] = backend
    return backend


register_backend(Backend("reference", "cpu", "fastff.kernels.reference"))
register_backend(Backend("cpu", "cpu", "fastff.kernels.cpu", plan_class=CPUPlan))
# CuPy is imported on the first CUDA kernel call, which says what is missing if it cannot run
register_backend(Backend("cuda", "cuda", "fastff.kernels.cuda", array_module="cupy",
                         plan_class="fastff.kernels.cuda.step:CUDAPlan",
                         loss_on_device=True))


def backends():
    """Names of the registered backends."""
    return sorted(_BACKENDS)


def get_backend(name):
    """The backend object called ``name``; a clear error if there is none."""
    if name not in _BACKENDS:
        raise InputError(f"unknown backend {name!r}; valid: {', '.join(backends())}")
    return _BACKENDS[name]


def get(op, backend):
    """The implementation of ``op`` on ``backend``; a clear error if there is none."""
    choose("op", op, dict.fromkeys(OPS))
    return getattr(get_backend(backend), op)


def backend_of(*arrays):
    """``cpu`` for NumPy arrays, ``cuda`` for CuPy arrays; mixing the two is an error."""
    kinds = set()
    for a in arrays:
        if a is None:
            continue
        if isinstance(a, np.ndarray):
            kinds.add("cpu")
        elif on_device(a):
            kinds.add("cuda")
        else:
            raise InputError(f"expected a NumPy or CuPy array (or one that exports DLPack, "
                             f"such as a PyTorch tensor), got {type(a).__name__}")
    if len(kinds) > 1:
        raise DeviceError("some arrays are NumPy (host) and some CuPy (GPU); fastff never copies "
                          "between them inside a kernel call: move them first "
                          "(cupy.asarray(a) or a.get())")
    return kinds.pop() if kinds else "cpu"


# The public kernels for arrays of any backend: the checked kernels of every backend
# (fastff.kernels.checked), on the kernels of the arrays' own (NumPy: cpu, CuPy: cuda)
_DISPATCH = CheckedKernels(lambda *arrays: get_backend(backend_of(*arrays)).module)
dense_forward = _DISPATCH.dense_forward
dense_backward_sgd = _DISPATCH.dense_backward_sgd
dense_backward_second_order = _DISPATCH.dense_backward_second_order
softmax_nll = _DISPATCH.softmax_nll
softmax_quadratic = _DISPATCH.softmax_quadratic


__all__ = ["dense_forward", "dense_backward_sgd", "dense_backward_second_order", "softmax_nll",
           "softmax_quadratic", "ForwardStats", "BackwardStats", "LayerRates", "Backend",
           "register_backend", "get_backend", "get", "backends", "backend_of", "reference", "cpu"]
