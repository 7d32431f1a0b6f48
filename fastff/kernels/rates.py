"""Per-parameter learning rates from second-order estimates: the state one layer carries.

The paper tried two such rates on Tanh with the standard initialization (its §5,
"second-order" methods): one from a diagonal Hessian estimate (LeCun et al. 1998b, "Efficient
BackProp") and one from a gradient-variance estimate. It gives neither formula, so fastff's are
these, fused into the backward pass (``dense_backward_second_order`` of every backend):

``diag_hessian`` (the stochastic diagonal Levenberg-Marquardt method of LeCun et al. 1998b)
    The Gauss-Newton diagonal is back-propagated beside the gradient: at a layer whose cost
    curvature with respect to its output is ``curv_h`` (batch, n_out), ``q = curv_h * f'(s)^2``,
    the estimate for W is ``(x^2)^T @ q``, for b ``q.sum(0)``, and the curvature passed down is
    ``curv_x = q @ (W^2)^T`` (the old W). At the softmax, ``curv_z`` is the diagonal of the
    cost's Gauss-Newton matrix (:func:`output_curvature`). Rate: ``lr / (1 + H / damping)``,
    LeCun's ``epsilon / (mu + H)`` with ``mu = damping`` and ``epsilon = lr * damping``.
``grad_variance``
    The unbiased variance, over the examples of the batch, of each parameter's per-example
    gradient: with ``delta = dC/ds`` carrying the mean cost's 1/batch factor,
    ``V = B / (B - 1) * (B * (x^2)^T @ delta^2 - g^2)`` where ``g = x^T @ delta`` (clipped at 0
    against rounding); batches need at least 2 rows. Rate: ``lr / (1 + sqrt(V) / damping)``:
    the steps of parameters whose gradient is noisier than ``damping`` shrink as 1 / noise.

Both estimates are running averages ``A <- decay * A + (1 - decay) * estimate``, bias-corrected
as ``A / (1 - decay^t)`` after ``t`` steps (so the first step uses its own estimate, not a
value pulled toward 0), and then ``W -= rate * g``, ``b -= rate_b * g_b``.

So ``lr`` is the largest rate any parameter gets (where the estimate is far below ``damping``,
the rate is SGD's), which keeps ``lr`` on SGD's scale, and ``damping`` is the scale of the
estimate above which a parameter's rate shrinks as 1 / estimate.
"""
import math

import numpy as np

from .. import config
from ..checks import choose
from ..errors import InputError
from ..softmax import softmax
from . import memory
from .stats import check_arrays

METHODS = ("diag_hessian", "grad_variance")


def check_hyper(method, damping, decay):
    """(method, damping, decay) checked; None picks the defaults of :mod:`fastff.config`."""
    choose("optimizer", method, dict.fromkeys(METHODS))
    damping = config.SECOND_ORDER_DAMPING[method] if damping is None else damping
    decay = config.SECOND_ORDER_DECAY if decay is None else decay
    for name, value in (("damping", damping), ("decay", decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
            raise InputError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(damping) and damping > 0):
        raise InputError(f"damping must be a positive finite number, got {damping!r}")
    if not 0 <= decay < 1:
        raise InputError(f"decay must be in [0, 1) (the running average's memory), got {decay!r}")
    return method, float(damping), float(decay)


class LayerRates:
    """The running estimate of one layer's per-parameter curvature or gradient variance.

    Parameters
    ----------
    n_in, n_out : int
        The layer's weight shape.
    method : str
        ``diag_hessian`` or ``grad_variance`` (see the module docstring).
    dtype : dtype
        The weights' dtype.
    damping : float, optional
        The scale of the estimate (of its square root for ``grad_variance``) above which a
        rate shrinks: rate = lr / (1 + estimate / damping). Default:
        ``config.SECOND_ORDER_DAMPING[method]``.
    decay : float, optional
        Memory of the running average, in [0, 1). Default: ``config.SECOND_ORDER_DECAY``.
    xp : module
        NumPy, or CuPy for a layer on a GPU.

    Attributes
    ----------
    W, b : arrays
        The running averages, shaped like the layer's weights and biases (zero before the
        first step).
    steps : int
        Steps averaged so far (the bias correction's t).
    """

    def __init__(self, n_in, n_out, method, dtype=np.float32, damping=None, decay=None, xp=np):
        self.method, self.damping, self.decay = check_hyper(method, damping, decay)
        self.W = memory.zeros((n_in, n_out), dtype, xp)  # on the host, on a cache line
        self.b = memory.zeros(n_out, dtype, xp)
        self.steps = 0

    def correction(self):
        """1 / (1 - decay^t) for the step about to be taken (t = steps + 1)."""
        return 1.0 / (1.0 - self.decay ** (self.steps + 1))

    def check(self, W, xp=np):
        """Raise InputError unless this state fits the weights ``W`` (its arrays are indexed
        without bounds checks by the kernels)."""
        if not isinstance(self, LayerRates):
            raise InputError(f"rates must be a LayerRates, got {type(self).__name__}")
        check_hyper(self.method, self.damping, self.decay)
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 0:
            raise InputError(f"LayerRates.steps must be a non-negative integer, got {self.steps!r}")
        n_in, n_out = W.shape
        check_arrays(self, {"W": ((n_in, n_out), W.dtype), "b": ((n_out,), W.dtype)}, xp)
        for name in ("W", "b"):
            if xp.may_share_memory(getattr(self, name), W):
                raise InputError(f"LayerRates.{name} shares memory with the weights W; it must "
                                 "be an array of its own")
        return self


def output_curvature(z, loss, xp=np):
    """The diagonal of the Gauss-Newton matrix of the mean cost with respect to the logits
    ``z`` (batch, n_classes), where ``diag_hessian`` starts its backward curvature pass.

    ``nll``: p (1 - p) / B, with p = softmax(z) (the Hessian of -log softmax is
    diag(p) - p p^T). ``quadratic`` (1/2 |p - t|^2): the diagonal of J^T J with
    J = diag(p) - p p^T, i.e. p_j^2 ((1 - p_j)^2 + sum_k p_k^2 - p_j^2) / B.
    """
    p = softmax(z.astype(np.float64), xp)
    if loss == "nll":
        c = p * (1 - p)
    else:
        c = p * p * ((1 - p) ** 2 + (p * p).sum(axis=1, keepdims=True) - p * p)
    return (c / z.shape[0]).astype(z.dtype)
