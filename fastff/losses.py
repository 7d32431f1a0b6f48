"""The output costs of the paper (its §4.1 and Fig. 5), by name.

``nll`` (the default): the negative log-likelihood of a softmax, -log P(y|x), the cost the paper
trains with. ``quadratic``: 1/2 sum_k (p_k - t_k)^2 between the same softmax p and the one-hot
target t, the cost of Rumelhart et al. (1986) that the paper compares it with in Fig. 5. The
paper does not say which output nonlinearity went with its quadratic cost; fastff keeps the
softmax, so that the two differ only in the cost. Each name maps to its kernel, which every
backend has under the same name (``softmax_nll``, ``softmax_quadratic``).
"""
from .checks import choose

KERNELS = {"nll": "softmax_nll", "quadratic": "softmax_quadratic"}


def get(name):
    """The name, checked: ``nll`` or ``quadratic``."""
    choose("loss", name, KERNELS)
    return name
