"""The one softmax of the NumPy side (the reference costs, the measurements, the curvature,
``MLP.forward``): a leaf every layer may import."""
import numpy as np


def softmax_parts(z, xp=np):
    """A stable softmax over the rows of ``z``, in ``z``'s dtype, as its parts: the row maxima
    m, e = exp(z - m) and the row sums of e (softmax = e / total). The one softmax of the
    NumPy side."""
    m = z.max(axis=1, keepdims=True)
    e = xp.exp(z - m)
    return e, e.sum(axis=1, keepdims=True), m


def softmax(z, xp=np):
    """softmax(z) over the rows, in ``z``'s dtype."""
    e, total, _ = softmax_parts(z, xp)
    return e / total
