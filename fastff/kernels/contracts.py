"""The argument checks of the kernel contracts, shared by every backend's public functions.

A public kernel (``dense_forward``, ``dense_backward_sgd``, ``softmax_nll`` of any backend)
runs these checks and then calls its unchecked twin, which indexes arrays and statistics
without bounds checks. So everything an unchecked kernel relies on is checked here: shapes,
dtypes, finiteness of the inputs, output arrays, learning rate, labels, and that statistics
objects were made for this very layer (their lengths and activation).
"""
import numpy as np

from .. import activations
from ..checks import (dense_shapes, finite, flag, float_array, labels, positive,
                      writable_c_contiguous)
from ..errors import InputError
from . import memory
from .rates import LayerRates
from .stats import BackwardStats, ForwardStats


def layer_arrays(x, W, b, xp=np):
    """Check x (batch, n_in), W (n_in, n_out), b (n_out,) of one float dtype; x finite."""
    float_array("W", W, 2)
    float_array("x", x, 2, W.dtype)
    float_array("b", b, 1, W.dtype)
    dense_shapes(x, W, b)
    finite("x", x, xp)


def out_array(name, out, shape, dtype, inputs=(), xp=np):
    """A fresh array, or the caller's ``out`` checked: type, shape, dtype, C order, writable,
    and sharing no memory with the ``inputs`` the kernel reads while it writes ``out``."""
    if out is None:
        return memory.empty(shape, dtype, xp)
    if not isinstance(out, xp.ndarray) or tuple(out.shape) != shape or out.dtype != dtype:
        raise InputError(f"{name} must be a {np.dtype(dtype)} {xp.__name__} array of shape "
                         f"{shape}, got {getattr(out, 'dtype', type(out).__name__)} "
                         f"{tuple(getattr(out, 'shape', ()))}")
    writable_c_contiguous(name, out)
    for other_name, other in inputs:
        if other is not None and xp.may_share_memory(out, other):
            raise InputError(f"{name} shares memory with {other_name}; pass a separate array")
    return out


def check_stats(stats, cls, n_units, activation=None, xp=np):
    """None, or statistics accumulators made for a layer of ``n_units`` outputs (and, for
    :class:`ForwardStats`, of ``activation``)."""
    if stats is None:
        return None
    if not isinstance(stats, cls):
        raise InputError(f"stats must be a {cls.__name__} (fastff.kernels.{cls.__name__}) or "
                         f"None, got {type(stats).__name__}")
    return stats.check(n_units, activation, xp) if cls is ForwardStats else stats.check(n_units, xp)


def forward_args(x, W, b, activation, out, stats, xp=np):
    """Check the arguments of ``dense_forward``; return (activation name, out)."""
    act = activations.get(activation).name
    layer_arrays(x, W, b, xp)
    shape = (x.shape[0], W.shape[1])
    out = out_array("out", out, shape, W.dtype, (("x", x), ("W", W), ("b", b)), xp)
    check_stats(stats, ForwardStats, W.shape[1], act, xp)
    return act, out


def backward_args(x, h, W, b, grad_h, activation, lr, grad_x, stats, compute_grad_x, xp=np):
    """Check the arguments of ``dense_backward_sgd``; return (activation name, grad_x)."""
    act = activations.get(activation).name
    layer_arrays(x, W, b, xp)
    float_array("h", h, 2, W.dtype)
    float_array("grad_h", grad_h, 2, W.dtype)
    dense_shapes(x, W, b, h=h, grad_h=grad_h)
    finite("grad_h", grad_h, xp)
    positive("lr", lr)
    flag("compute_grad_x", compute_grad_x)
    writable_c_contiguous("W", W)
    writable_c_contiguous("b", b)
    for name, a in (("W", W), ("b", b)):
        for other_name, other in (("x", x), ("h", h), ("grad_h", grad_h)):
            if xp.may_share_memory(a, other):
                raise InputError(f"{name} is updated in place and shares memory with {other_name}")
    if compute_grad_x:
        grad_x = out_array("grad_x", grad_x, tuple(x.shape), W.dtype,
                           (("x", x), ("h", h), ("W", W), ("b", b), ("grad_h", grad_h)), xp)
    check_stats(stats, BackwardStats, W.shape[1], xp=xp)
    return act, (grad_x if compute_grad_x else None)


def second_order_args(x, h, W, b, grad_h, activation, lr, rates, curv_h, grad_x, curv_x, stats,
                      compute_grad_x, xp=np):
    """Check the arguments of ``dense_backward_second_order``; return (grad_x, curv_x), fresh
    or checked, each None where not computed."""
    act, grad_x = backward_args(x, h, W, b, grad_h, activation, lr, grad_x, stats,
                                compute_grad_x, xp)
    if not isinstance(rates, LayerRates):
        raise InputError(f"rates must be a fastff.kernels.LayerRates, got {type(rates).__name__}")
    rates.check(W, xp)
    for name, a in (("W", W), ("b", b)):
        for other_name, other in (("rates.W", rates.W), ("rates.b", rates.b)):
            if xp.may_share_memory(a, other):
                raise InputError(f"{name} shares memory with {other_name}")
    hessian = rates.method == "diag_hessian"
    if hessian:
        if curv_h is None:
            raise InputError("diag_hessian needs curv_h, the curvature of the cost with respect "
                             "to h (fastff.kernels.rates.output_curvature at the softmax)")
        float_array("curv_h", curv_h, 2, W.dtype)
        if curv_h.shape != grad_h.shape:
            raise InputError(f"curv_h must have grad_h's shape {tuple(grad_h.shape)}, got "
                             f"{tuple(curv_h.shape)}")
        finite("curv_h", curv_h, xp)
    elif curv_h is not None:
        raise InputError("curv_h is for diag_hessian; grad_variance takes none")
    elif x.shape[0] < 2:
        raise InputError("grad_variance estimates a variance over the batch's examples and "
                         f"needs a batch of at least 2, got {x.shape[0]}")
    if curv_x is not None and not (hessian and compute_grad_x):
        raise InputError("curv_x is written only by diag_hessian with compute_grad_x=True")
    if hessian and compute_grad_x:
        curv_x = out_array("curv_x", curv_x, tuple(x.shape), W.dtype,
                           (("x", x), ("h", h), ("W", W), ("b", b), ("grad_h", grad_h),
                            ("curv_h", curv_h), ("grad_x", grad_x), ("rates.W", rates.W)), xp)
    for name, a in (("grad_x", grad_x), ("curv_x", curv_x)):
        for other_name, other in (("curv_h", curv_h), ("rates.W", rates.W), ("rates.b", rates.b)):
            if a is not None and other is not None and xp.may_share_memory(a, other):
                raise InputError(f"{name} shares memory with {other_name}; pass a separate array")
    return grad_x, curv_x


def softmax_args(z, y, grad_z=None, xp=np):
    """Check the arguments of ``softmax_nll``; return grad_z (fresh or checked)."""
    float_array("z", z, 2)
    labels(y, z.shape[0], z.shape[1], xp)
    finite("z", z, xp)
    return out_array("grad_z", grad_z, tuple(z.shape), z.dtype, (("z", z),), xp)
