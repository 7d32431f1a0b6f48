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
from .stats import BackwardStats, ForwardStats
from ..checks import choose
from ..errors import DeviceError, InputError

OPS = ("dense_forward", "dense_backward_sgd", "softmax_nll",
       "forward_unchecked", "backward_unchecked", "softmax_nll_unchecked")

_REGISTRY = {}


def register(op, backend, fn):
    """Register ``fn`` as the implementation of ``op`` on ``backend``."""
    if op not in OPS:
        raise InputError(f"unknown op {op!r}; valid: {', '.join(OPS)}")
    _REGISTRY[(op, backend)] = fn


for _backend, _module in (("reference", reference), ("cpu", cpu)):
    for _op in OPS:
        register(_op, _backend, getattr(_module, _op))


def backends():
    """Names of the registered backends."""
    return sorted({b for _, b in _REGISTRY})


def get(op, backend):
    """The implementation of ``op`` on ``backend``; a clear error if there is none."""
    choose("op", op, dict.fromkeys(OPS))
    if (op, backend) not in _REGISTRY:
        if backend == "cuda":
            raise DeviceError("this build of fastff has no CUDA kernels registered; "
                              "use device='cpu' or NumPy arrays")
        raise InputError(f"unknown backend {backend!r}; valid: {', '.join(backends())}")
    return _REGISTRY[(op, backend)]


def backend_of(*arrays):
    """``cpu`` for NumPy arrays, ``cuda`` for CuPy arrays; mixing the two is an error."""
    kinds = set()
    for a in arrays:
        if a is None:
            continue
        if isinstance(a, np.ndarray):
            kinds.add("cpu")
        elif type(a).__module__.startswith("cupy"):
            kinds.add("cuda")
        else:
            raise InputError(f"expected a NumPy or CuPy array, got {type(a).__name__}")
    if len(kinds) > 1:
        raise DeviceError("some arrays are NumPy (host) and some CuPy (GPU); fastff never copies "
                          "between them inside a kernel call: move them first "
                          "(cupy.asarray(a) or a.get())")
    return kinds.pop() if kinds else "cpu"


def dense_forward(x, W, b, activation, out=None, stats=None):
    """h = f(x @ W + b), fused with statistics; see :func:`fastff.kernels.reference.dense_forward`."""
    return get("dense_forward", backend_of(x, W, b, out))(x, W, b, activation, out=out, stats=stats)


def dense_backward_sgd(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True):
    """Backward pass + SGD update; see :func:`fastff.kernels.reference.dense_backward_sgd`."""
    fn = get("dense_backward_sgd", backend_of(x, h, W, b, grad_h, grad_x))
    return fn(x, h, W, b, grad_h, activation, lr, grad_x=grad_x, stats=stats,
              compute_grad_x=compute_grad_x)


def softmax_nll(z, y):
    """Mean softmax NLL and its gradient; see :func:`fastff.kernels.reference.softmax_nll`."""
    return get("softmax_nll", backend_of(z, y))(z, y)


__all__ = ["dense_forward", "dense_backward_sgd", "softmax_nll", "ForwardStats",
           "BackwardStats", "register", "get", "backends", "backend_of", "reference", "cpu"]
