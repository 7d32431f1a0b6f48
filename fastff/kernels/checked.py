"""The public kernels, written once for every backend: check the arguments, then call the
backend's unchecked twin with named arguments.

A backend's kernels module (``reference``, ``cpu``, ``cuda``) holds only the unchecked kernels
(``forward_unchecked``, ``backward_unchecked``, ``second_order_unchecked``,
``softmax_nll_unchecked``, ``softmax_quadratic_unchecked``) and ``array_module()``, the array
module its arrays belong to. Its public names come from :func:`public`, so the five public
kernels have one signature, one docstring and one set of checks on every backend
(:mod:`.contracts`), and :mod:`fastff.kernels` dispatches by array type through the same
definitions.

Every public kernel also takes arrays of other libraries that export DLPack (PyTorch tensors on
the CPU or a CUDA GPU): they are read as NumPy or CuPy arrays sharing their memory, and what
comes back is of the caller's kind (:func:`accepts_dlpack`).
"""
import functools
import importlib
import inspect

import numpy as np

from .. import activations
from ..arrays import foreign, from_foreign, like, on_device
from ..checks import flag
from ..errors import DeviceError, InputError
from . import contracts

PUBLIC = ("dense_forward", "dense_backward_sgd", "dense_backward_second_order", "softmax_nll",
          "softmax_quadratic")


def accepts_dlpack(kernel):
    """``kernel`` taking arrays of other libraries too (:func:`fastff.arrays.foreign`).

    Each such argument is read through DLPack as the NumPy or CuPy array that shares its memory
    (no copy; a tensor that requires grad is refused, :func:`fastff.arrays.from_foreign`), so
    the contracts hold for it exactly as for a NumPy array. The arrays that come back are of
    the kind of the call's first foreign argument, sharing memory with fastff's result: an
    ``out=`` (``grad_x=``, ``curv_x=``, ``grad_z=``) given as a tensor comes back as that very
    tensor, written in place. A call without foreign arguments goes straight through.
    """
    names = list(inspect.signature(kernel).parameters)[1:]  # after self

    @functools.wraps(kernel)
    def call(self, *args, **kwargs):
        if not (any(map(foreign, args)) or any(map(foreign, kwargs.values()))):
            return kernel(self, *args, **kwargs)
        given = {**dict(zip(names, args)), **kwargs}
        caller = next(a for a in given.values() if foreign(a))
        shared, originals = {}, {}
        for name, a in given.items():
            if foreign(a):
                shared[name] = from_foreign(name, a)
                originals[id(shared[name])] = a
            else:
                shared[name] = a
        result = kernel(self, **shared)

        def back(r):
            if r is None or isinstance(r, float):
                return r
            return originals[id(r)] if id(r) in originals else like(caller, r)
        return tuple(map(back, result)) if isinstance(result, tuple) else back(result)
    return call


class CheckedKernels:
    """The public kernels over the kernels module that ``module_for(*arrays)`` names for a
    call's arrays (one module for a backend's own names; the arrays' backend for
    :mod:`fastff.kernels`'s dispatch)."""

    def __init__(self, module_for):
        self._module_for = module_for

    def _kernels(self, tf32, **arrays):
        """(kernels module, its array module, the unchecked call's hints) for one call:
        every array must be of the module's kind (no copy between host and GPU), and
        ``tf32=True`` needs kernels that have tensor cores (the CUDA kernels check the dtype,
        the tiles and the GPU themselves, check_tf32)."""
        module = self._module_for(*arrays.values())
        xp = module.array_module()  # for CUDA: the runtime, or an error saying what is missing
        for name, a in arrays.items():
            if (isinstance(a, np.ndarray) or on_device(a)) and not isinstance(a, xp.ndarray):
                raise DeviceError(f"{name} is a {type(a).__module__}.{type(a).__name__}; these "
                                  f"kernels take {xp.__name__} arrays: fastff never copies "
                                  "between host and GPU behind your back (move it first: "
                                  "cupy.asarray(a) or a.get())")
        if not flag("tf32", tf32):
            return module, xp, {}
        if "tf32" not in getattr(module, "CAPABILITIES", ()):
            raise InputError("tf32=True runs products on NVIDIA tensor cores: only the CUDA "
                             f"kernels have it, not {module.__name__}'s")
        return module, xp, {"tf32": True}

    @accepts_dlpack
    def dense_forward(self, x, W, b, activation, out=None, stats=None, *, tf32=False):
        """h = f(x @ W + b), fused with the statistics of h.

        Parameters
        ----------
        x : array (batch, n_in), float32 or float64
        W : array (n_in, n_out), same dtype
        b : array (n_out,), same dtype
        activation : str
            ``sigmoid``, ``tanh``, ``softsign``, ``relu`` or ``linear``.
        out : array (batch, n_out), optional
            Written with h and returned.
        stats : ForwardStats, optional
            Accumulates saturation counts, sums and the histogram of h in the same pass; made
            for this layer (``ForwardStats(n_out, activation)``).
        tf32 : bool
            CUDA only, float32 only: x @ W on tensor cores with its operands rounded to TF32
            (10-bit mantissa): faster at large batches, no longer the paper's float32 numbers
            (relative error about 1e-3, growing with the layer's width).

        Returns
        -------
        array (batch, n_out)
        """
        module, xp, hints = self._kernels(tf32, x=x, W=W, b=b, out=out)
        activation, out = contracts.forward_args(x, W, b, activation, out, stats, xp)
        c = xp.ascontiguousarray
        return module.forward_unchecked(x=c(x), W=c(W), b=c(b), activation=activation, out=out,
                                        stats=stats, **hints)

    @accepts_dlpack
    def dense_backward_sgd(self, x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                           compute_grad_x=True, *, tf32=False):
        """Back-propagate through one layer and apply its SGD update in place.

        delta = grad_h * f'(h) (derivative from the output); grad_x = delta @ W.T with the *old*
        W; then W -= lr * x.T @ delta and b -= lr * delta.sum(0).

        Parameters
        ----------
        x : array (batch, n_in)
            The layer's input from the forward pass.
        h : array (batch, n_out)
            The layer's output from the forward pass.
        W, b : array
            Parameters, updated in place (C-contiguous and writable).
        grad_h : array (batch, n_out)
            dC/dh. For a mean loss it already carries the 1/batch factor.
        activation : str
        lr : float
            Learning rate.
        grad_x : array (batch, n_in), optional
            Written with dC/dx and returned.
        stats : BackwardStats, optional
            Accumulates statistics of delta = dC/ds and of dC/dW.
        compute_grad_x : bool
            False skips dC/dx (the first layer needs none) and returns None.
        tf32 : bool
            CUDA only: dC/dx in TF32, as :meth:`dense_forward`'s product.

        Returns
        -------
        array (batch, n_in) or None
        """
        module, xp, hints = self._kernels(tf32, x=x, h=h, W=W, b=b, grad_h=grad_h,
                                          grad_x=grad_x)
        activation, grad_x = contracts.backward_args(x, h, W, b, grad_h, activation, lr, grad_x,
                                                     stats, compute_grad_x, xp)
        c = xp.ascontiguousarray
        return module.backward_unchecked(x=c(x), h=c(h), W=W, b=b, grad_h=c(grad_h),
                                         activation=activation, lr=lr, grad_x=grad_x,
                                         stats=stats, compute_grad_x=bool(compute_grad_x),
                                         **hints)

    @accepts_dlpack
    def dense_backward_second_order(self, x, h, W, b, grad_h, activation, lr, rates, curv_h=None,
                                    grad_x=None, curv_x=None, stats=None, compute_grad_x=True, *,
                                    tf32=False):
        """Back-propagate through one layer and apply a per-parameter-rate update in place.

        As :meth:`dense_backward_sgd`, but each parameter moves by ``lr / (1 + A / damping) *
        g`` where A is the running estimate held in ``rates`` (a
        :class:`~fastff.kernels.rates.LayerRates`; the formulas are in that module's
        docstring): the diagonal Gauss-Newton curvature (``diag_hessian``, which also
        back-propagates it) or the square root of the per-example gradient variance
        (``grad_variance``).

        Parameters
        ----------
        x, h, W, b, grad_h, activation, lr
            As in :meth:`dense_backward_sgd`.
        rates : LayerRates
            The running estimates of this layer, updated in place (``rates.steps`` goes up
            by 1).
        curv_h : array (batch, n_out), optional
            ``diag_hessian`` only, and required there: the Gauss-Newton curvature of the cost
            with respect to h (with the mean cost's 1/batch factor), from the layer above or
            from :func:`fastff.kernels.rates.output_curvature`.
        grad_x, curv_x : array (batch, n_in), optional
            Written with dC/dx and (``diag_hessian``) the curvature with respect to x.
        stats : BackwardStats, optional
        compute_grad_x : bool
            False skips dC/dx and the curvature below (the first layer needs neither).
        tf32 : bool
            CUDA only: dC/dx and the curvature's product in TF32.

        Returns
        -------
        (grad_x, curv_x)
            Each an array (batch, n_in), or None when not computed (``curv_x`` is None for
            ``grad_variance``).
        """
        module, xp, hints = self._kernels(
            tf32, x=x, h=h, W=W, b=b, grad_h=grad_h, curv_h=curv_h, grad_x=grad_x,
            curv_x=curv_x, rates_W=getattr(rates, "W", None), rates_b=getattr(rates, "b", None))
        grad_x, curv_x = contracts.second_order_args(x, h, W, b, grad_h, activation, lr, rates,
                                                     curv_h, grad_x, curv_x, stats,
                                                     compute_grad_x, xp)
        c = xp.ascontiguousarray
        return module.second_order_unchecked(
            x=c(x), h=c(h), W=W, b=b, grad_h=c(grad_h),
            activation=activations.get(activation).name, lr=lr, rates=rates,
            curv_h=None if curv_h is None else c(curv_h), grad_x=grad_x, curv_x=curv_x,
            stats=stats, compute_grad_x=bool(compute_grad_x), **hints)

    @accepts_dlpack
    def softmax_nll(self, z, y, grad_z=None):
        """Mean negative log-likelihood of a softmax over ``z`` and its gradient.

        Parameters
        ----------
        z : array (batch, n_classes)
            Logits.
        y : array (batch,) of ints
            Class ids in [0, n_classes).
        grad_z : array (batch, n_classes), optional
            Written with the gradient and returned.

        Returns
        -------
        loss : float
            mean over the batch of -log softmax(z)[y] (on a GPU: one synchronization).
        grad_z : array (batch, n_classes)
            d loss / d z = (softmax(z) - onehot(y)) / batch, in the dtype of ``z``.
        """
        return self._loss("softmax_nll_unchecked", z, y, grad_z)

    @accepts_dlpack
    def softmax_quadratic(self, z, y, grad_z=None):
        """Mean quadratic cost between a softmax over ``z`` and the one-hot target, and its
        gradient.

        The paper compares the log-likelihood with the quadratic cost of Rumelhart et al.
        (1986) (§4.1, Fig. 5) without naming the output nonlinearity under the quadratic cost;
        fastff keeps the softmax, so that the two costs differ only in the cost:
        C = 1/2 sum_k (p_k - t_k)^2 with p = softmax(z), t = onehot(y).

        Parameters
        ----------
        z, y, grad_z
            As in :meth:`softmax_nll`.

        Returns
        -------
        loss : float
            mean over the batch of 1/2 sum_k (p_k - t_k)^2.
        grad_z : array (batch, n_classes)
            d loss / d z_j = p_j ((p_j - t_j) - sum_k (p_k - t_k) p_k) / batch, in the dtype of
            ``z``.
        """
        return self._loss("softmax_quadratic_unchecked", z, y, grad_z)

    def _loss(self, unchecked, z, y, grad_z):
        module, xp, _ = self._kernels(False, z=z, y=y, grad_z=grad_z)
        grad_z = contracts.softmax_args(z, y, grad_z, xp)
        loss, grad_z = getattr(module, unchecked)(
            z=xp.ascontiguousarray(z), y=xp.ascontiguousarray(y, dtype=np.int64), grad_z=grad_z)
        return float(loss), grad_z


def public(module_name):
    """The public kernels of the kernels module ``module_name``, in the order of
    :data:`PUBLIC` (the module may still be importing: it is looked up on each call)."""
    found = []

    def module_for(*arrays):
        if not found:
            found.append(importlib.import_module(module_name))
        return found[0]
    kernels = CheckedKernels(module_for)
    return tuple(getattr(kernels, name) for name in PUBLIC)
