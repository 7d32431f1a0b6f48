"""Weight initializations, named exactly. Biases are always zero (the paper's §2.3).

=============  ============================================  ============================
name           distribution of W[i, j], W of shape (n_in, n_out)   Var[W]
=============  ============================================  ============================
standard       U[-1/sqrt(n_in), 1/sqrt(n_in)]   (paper eq. 1)        1 / (3 n_in)
normalized     U[+-sqrt(6 / (n_in + n_out))]    (paper eq. 16)       2 / (n_in + n_out)
he             N(0, 2 / n_in)                   (He et al. 2015)     2 / n_in
lecun          U[+-sqrt(3 / n_in)]              (LeCun 1998)         1 / n_in
normal         N(0, 1)                          (the pre-2010 habit) 1
=============  ============================================  ============================

``xavier`` and ``glorot`` are aliases of ``normalized``.

Two traps:

* Keras ``lecun_uniform`` (variance 1/n_in) is **not** the paper's standard init (variance
  1/(3 n_in)); a "standard" baseline built from it hides the effect the paper reports.
* PyTorch's default ``nn.Linear`` weights equal ``standard``, but its biases are drawn from the
  same uniform, **not zero** as in the paper.
"""
import numpy as np

from .checks import choose, positive


def standard(n_in, n_out, rng, dtype=np.float32):
    """Paper eq. 1: U[-1/sqrt(n_in), 1/sqrt(n_in)], so n_in Var[W] = 1/3 (eq. 15)."""
    bound = 1.0 / np.sqrt(n_in)
    return rng.uniform(-bound, bound, size=(n_in, n_out)).astype(dtype)


def normalized(n_in, n_out, rng, dtype=np.float32):
    """Paper eq. 16 (Xavier/Glorot): U[+-sqrt(6/(n_in+n_out))], Var[W] = 2/(n_in+n_out) (eq. 12)."""
    bound = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-bound, bound, size=(n_in, n_out)).astype(dtype)


def he(n_in, n_out, rng, dtype=np.float32):
    """He et al. (2015): N(0, std=sqrt(2/n_in)), the forward condition for relu units."""
    return rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_out)).astype(dtype)


def lecun(n_in, n_out, rng, dtype=np.float32):
    """LeCun et al. (1998): U[+-sqrt(3/n_in)], Var[W] = 1/n_in (three times the paper's standard)."""
    bound = np.sqrt(3.0 / n_in)
    return rng.uniform(-bound, bound, size=(n_in, n_out)).astype(dtype)


def normal(n_in, n_out, rng, dtype=np.float32):
    """N(0, 1): unit-variance weights, the habit the paper's analysis argues against."""
    return rng.normal(0.0, 1.0, size=(n_in, n_out)).astype(dtype)


INITS = {
    "standard": standard,
    "normalized": normalized,
    "xavier": normalized,
    "glorot": normalized,
    "he": he,
    "lecun": lecun,
    "normal": normal,
}


def init_weights(name, n_in, n_out, rng, dtype=np.float32):
    """Draw one weight matrix of shape (n_in, n_out) with the scheme ``name``.

    Parameters
    ----------
    name : str
        One of ``standard``, ``normalized`` (alias ``xavier``, ``glorot``), ``he``, ``lecun``,
        ``normal``.
    n_in, n_out : int
        Fan-in and fan-out of the layer.
    rng : numpy.random.Generator
        Source of randomness (seeded by the caller for reproducibility).
    dtype : numpy dtype
        float32 (default) or float64.
    """
    fn = choose("init", name, INITS)
    positive("n_in", n_in, integer=True)
    positive("n_out", n_out, integer=True)
    return fn(int(n_in), int(n_out), rng, np.dtype(dtype))
