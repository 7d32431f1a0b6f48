"""Statistics accumulators filled by the fused kernels.

They are plain containers of arrays (NumPy, or CuPy on a GPU) so that every backend can update
them in place during the pass that already holds the data. Counters are exact integers; sums are
accumulated in float64.

Forward (per layer, over every row the kernel saw):

* ``sat_low[j]``, ``sat_high[j]``: how many times unit j's output was saturated low / high
  (thresholds: :data:`fastff.config.SATURATION`);
* ``total[j]``, ``total_sq[j]``: sum and sum of squares of unit j's output;
* ``hist[k]``: fixed-bin histogram of all outputs of the layer over
  :data:`fastff.config.HIST_RANGE` (values outside clip to the end bins; NaN is not counted);
* ``rows``: number of rows (examples) accumulated.

Backward (per layer): ``delta_total[j]``, ``delta_total_sq[j]`` for the back-propagated gradient
delta = dC/ds (the paper's Fig. 7 quantity), and ``grad_w_total``, ``grad_w_total_sq`` (two
scalars in 1-element arrays) for the weight gradient dC/dW = x.T @ delta (Figs. 8, 9).
"""
import numpy as np

from .. import activations, config


class ForwardStats:
    """Per-unit saturation counters, sums and a layer histogram of the outputs h."""

    def __init__(self, n_units, activation, xp=np, bins=None):
        act = activations.get(activation)
        self.activation = act.name
        self.low, self.high = act.thresholds
        self.hist_lo, self.hist_hi = act.hist_range
        self.bins = int(bins or config.HIST_BINS)
        self.sat_low = xp.zeros(n_units, dtype=np.int64)
        self.sat_high = xp.zeros(n_units, dtype=np.int64)
        self.total = xp.zeros(n_units, dtype=np.float64)
        self.total_sq = xp.zeros(n_units, dtype=np.float64)
        self.hist = xp.zeros(self.bins, dtype=np.int64)
        self.rows = xp.zeros(1, dtype=np.int64)

    @property
    def n_units(self):
        return self.sat_low.shape[0]

    def reset(self):
        """Zero every accumulator in place."""
        for a in (self.sat_low, self.sat_high, self.total, self.total_sq, self.hist, self.rows):
            a.fill(0)

    def summary(self):
        """Layer scalars: saturated fractions, mean and std of h, dead-unit fraction (relu)."""
        rows = int(self.rows[0])
        count = rows * self.n_units
        if count == 0:
            nan = float("nan")
            return dict(sat_low=nan, sat_high=nan, mean=nan, std=nan, dead=nan)
        mean = float(self.total.sum()) / count
        var = max(float(self.total_sq.sum()) / count - mean * mean, 0.0)
        out = dict(sat_low=float(self.sat_low.sum()) / count,
                   sat_high=float(self.sat_high.sum()) / count,
                   mean=mean, std=var ** 0.5)
        # A relu unit is dead when its output was 0 for every row seen.
        out["dead"] = float((self.sat_low == rows).sum()) / self.n_units if self.activation == "relu" else 0.0
        return out


class BackwardStats:
    """Sums of the back-propagated gradient dC/ds per unit and of the weight gradient."""

    def __init__(self, n_units, xp=np, weight_grad=True):
        # Measuring dC/dW costs the kernel an extra product per weight; per-step monitoring
        # leaves it off and measures it on the monitor set instead.
        self.weight_grad = bool(weight_grad)
        self.delta_total = xp.zeros(n_units, dtype=np.float64)
        self.delta_total_sq = xp.zeros(n_units, dtype=np.float64)
        self.grad_w_total = xp.zeros(1, dtype=np.float64)
        self.grad_w_total_sq = xp.zeros(1, dtype=np.float64)
        # rows and steps share one array so that a kernel updates both in one argument
        self.counts = xp.zeros(2, dtype=np.int64)
        self.rows = self.counts[0:1]
        self.steps = self.counts[1:2]

    def reset(self):
        """Zero every accumulator in place."""
        for a in (self.delta_total, self.delta_total_sq, self.grad_w_total,
                  self.grad_w_total_sq, self.counts):
            a.fill(0)

    def summary(self, n_in):
        """Layer scalars: std of dC/ds over units and rows, std of dC/dW entries (over steps)."""
        rows, steps = int(self.rows[0]), int(self.steps[0])
        n_units = self.delta_total.shape[0]
        out = dict(delta_std=float("nan"), grad_w_std=float("nan"))
        if rows:
            m = float(self.delta_total.sum()) / (rows * n_units)
            out["delta_std"] = max(float(self.delta_total_sq.sum()) / (rows * n_units) - m * m, 0.0) ** 0.5
        if steps:
            count = steps * n_in * n_units
            m = float(self.grad_w_total[0]) / count
            out["grad_w_std"] = max(float(self.grad_w_total_sq[0]) / count - m * m, 0.0) ** 0.5
        return out
