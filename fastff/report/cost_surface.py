"""Fig. 5: the training cost as a surface over one first-layer and one output weight, for the
log-likelihood and the quadratic cost, with the plateaus measured rather than only drawn.

The paper's setting (§4.1, Fig. 5): a network with one hidden tanh layer, random inputs
and random targets; it does not give the width, the weight ranges or the data size. fastff's
choices: ``n_examples`` = 200 inputs x ~ N(0, 1), ``n_in`` = ``n_hidden`` = 1, 2 classes drawn
uniformly, biases 0, every other weight from the normalized init; the two weights W1[0, 0] and
W2[0, 0] swept over [-span, span] with span = 8: the plateaus the paper describes come from
saturated outputs, and within +-4 this one-unit net's output probabilities stay within [0.02,
0.98]. The costs are fastff's own kernels (:func:`fastff.kernels.reference.softmax_nll` and
``softmax_quadratic``), so the surfaces are exactly what training descends.

A **plateau** is a grid point where the cost is flat but not low: the norm of its gradient over
the two weights (central differences on the grid) is under ``plateau_threshold`` (1%) of its
largest value on that surface, and the cost is above the surface's median (a flat minimum is
not a plateau). Measured with the defaults and seeds 0-2: quadratic 7.3-8.0% of the grid,
log-likelihood 0%; with span 4, neither has any.
"""
from dataclasses import dataclass, field

import numpy as np

from ..checks import positive, seed as check_seed
from ..errors import InputError
from ..init import init_weights
from ..kernels import reference as ref
from .plotting import finish, pyplot

COSTS = {"nll": ref.softmax_nll, "quadratic": ref.softmax_quadratic}


@dataclass
class CostSurface:
    """The costs over the grid of the two weights.

    Attributes
    ----------
    w1, w2 : ndarray (points,)
        Values of the first-layer weight W1[0, 0] and the output weight W2[0, 0].
    cost : dict of str -> ndarray (points, points)
        ``cost[name][i, j]`` is the mean cost at W1[0, 0] = w1[i], W2[0, 0] = w2[j].
    plateau : dict of str -> float
        Fraction of the grid that is plateau: gradient norm under the threshold, cost above
        the median.
    threshold : float
    """

    w1: np.ndarray
    w2: np.ndarray
    cost: dict = field(default_factory=dict)
    plateau: dict = field(default_factory=dict)
    threshold: float = 0.01


def plateau_fraction(cost, w1, w2, threshold=0.01):
    """Fraction of a grid that is plateau: gradient norm under ``threshold`` x its maximum,
    and cost above the median."""
    g1, g2 = np.gradient(cost, w1, w2)
    norm = np.hypot(g1, g2)
    top = float(norm.max())
    if top == 0:
        return 0.0  # a constant surface: no descent anywhere, but nothing above its median
    return float(((norm < threshold * top) & (cost > np.median(cost))).mean())


def cost_surface(n_examples=200, n_in=1, n_hidden=1, n_classes=2, span=8.0, points=61, seed=0,
                 plateau_threshold=0.01):
    """Both costs of a one-hidden-layer tanh net over a grid of two weights.

    Parameters
    ----------
    n_examples, n_in, n_hidden, n_classes : int
        The random data set and the net (see the module docstring for the defaults' reasons).
    span : float
        Both weights run over [-span, span].
    points : int
        Grid points per weight (at least 3).
    seed : int
        Fixes the inputs, the targets and the other weights.
    plateau_threshold : float
        A plateau is where the gradient norm is under this fraction of its maximum (and the
        cost above its median).

    Returns
    -------
    CostSurface
    """
    for name, v in (("n_examples", n_examples), ("n_in", n_in), ("n_hidden", n_hidden),
                    ("points", points)):
        positive(name, v, integer=True)
    if not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise InputError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    if points < 3:
        raise InputError(f"points must be at least 3 to measure a gradient, got {points}")
    positive("span", span)
    if not 0 < plateau_threshold < 1:
        raise InputError(f"plateau_threshold must be in (0, 1), got {plateau_threshold!r}")
    rng = np.random.default_rng(check_seed(seed))
    x = rng.standard_normal((n_examples, n_in))
    y = rng.integers(0, n_classes, n_examples)
    W1 = init_weights("normalized", n_in, n_hidden, rng, np.float64)
    W2 = init_weights("normalized", n_hidden, n_classes, rng, np.float64)
    b1, b2 = np.zeros(n_hidden), np.zeros(n_classes)
    w1 = np.linspace(-span, span, points)
    w2 = np.linspace(-span, span, points)
    out = CostSurface(w1=w1, w2=w2, threshold=plateau_threshold)
    cost = {name: np.empty((points, points)) for name in COSTS}
    for i, a in enumerate(w1):
        W1[0, 0] = a
        h = ref.dense_forward(x, W1, b1, "tanh")
        for j, b in enumerate(w2):
            W2[0, 0] = b
            z = ref.dense_forward(h, W2, b2, "linear")
            for name, fn in COSTS.items():
                cost[name][i, j] = fn(z, y)[0]
    out.cost = cost
    out.plateau = {name: plateau_fraction(c, w1, w2, plateau_threshold) for name, c in cost.items()}
    return out


def draw(surface=None):
    """Fig. 5 as a matplotlib Figure: the two surfaces side by side, each titled with its
    plateau fraction (``surface`` defaults to :func:`cost_surface`'s)."""
    s = cost_surface() if surface is None else surface
    plt = pyplot()
    fig = plt.figure(figsize=(11, 4.8))
    A, B = np.meshgrid(s.w1, s.w2, indexing="ij")
    titles = {"nll": "cross-entropy (negative log-likelihood)",
              "quadratic": "quadratic: 1/2 |softmax - onehot|^2"}
    colors = {"nll": "Greys", "quadratic": "Reds"}
    for k, (name, cost) in enumerate(s.cost.items()):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        ax.plot_surface(A, B, cost, cmap=colors[name], linewidth=0, antialiased=True, alpha=0.9)
        ax.set(xlabel="W1 (first layer)", ylabel="W2 (output layer)", zlabel="cost")
        ax.set_title(f"{titles[name]}\nplateau: {100 * s.plateau[name]:.1f}% of the grid "
                     f"(|grad| < {100 * s.threshold:g}% of max, cost > median)", fontsize=9)
    return finish(fig, "Training cost over two weights of a one-hidden-layer tanh net, random "
                   "inputs and targets (paper Fig. 5)")

