"""The output costs of the paper (its §4.1 and Fig. 5), by name.

``nll`` (the default): the negative log-likelihood of a softmax, -log P(y|x), the cost the paper
trains with. ``quadratic``: 1/2 sum_k (p_k - t_k)^2 between the same softmax p and the one-hot
target t, the cost of Rumelhart et al. (1986) that the paper compares it with in Fig. 5. The
paper does not say which output nonlinearity went with its quadratic cost; fastff keeps the
softmax, so that the two differ only in the cost. Each name maps to its kernel, which every
backend has under the same name (``softmax_nll``, ``softmax_quadratic``).
"""
import numpy as np

from .checks import choose

KERNELS = {"nll": "softmax_nll", "quadratic": "softmax_quadratic"}


def get(name):
    """The name, checked: ``nll`` or ``quadratic``."""
    choose("loss", name, KERNELS)
    return name


def per_example(z, y, name, xp=np):
    """Mean cost, error and the per-example gradient dC/dz (no 1/n factor) in float64 maths,
    for measurements (:mod:`fastff.monitor`) rather than for the training step."""
    from .kernels.reference import softmax_parts  # (kernels import this module)
    z64 = z.astype(np.float64)
    e, total, m = softmax_parts(z64, xp)
    p = e / total
    rows = xp.arange(z.shape[0])
    error = float((z64.argmax(axis=1) != y).mean())
    err = p.copy()
    err[rows, y] -= 1
    if name == "nll":
        loss = float(-((z64[rows, y] - m[:, 0]) - xp.log(total[:, 0])).mean())
        grad = err
    else:
        loss = float(0.5 * (err * err).sum(axis=1).mean())
        grad = p * (err - (err * p).sum(axis=1, keepdims=True))
    return loss, error, grad.astype(z.dtype)
