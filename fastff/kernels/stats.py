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
import math

import numpy as np

from .. import activations, config
from ..arrays import array_module, to_host
from ..checks import positive
from ..errors import InputError


def check_arrays(owner, expected, xp):
    """Every accumulator of ``owner`` must still be the array the kernels were promised:
    the right length, dtype, array module, contiguous and writable (they index it unchecked)."""
    for name, (shape, dtype) in expected.items():
        a = getattr(owner, name, None)
        ok = (a is not None and type(a).__module__.split(".")[0] == xp.__name__.split(".")[0]
              and tuple(a.shape) == shape and a.dtype == dtype and a.flags.c_contiguous
              and getattr(a.flags, 'writeable', True))
        if not ok:
            got = (f"{type(a).__name__} {getattr(a, 'dtype', '')} {tuple(getattr(a, 'shape', ()))}"
                   if a is not None else "nothing")
            raise InputError(f"{type(owner).__name__}.{name} must be a writable, contiguous "
                             f"{xp.__name__} {np.dtype(dtype)} array of shape {shape}, got {got}")


def _check_width(owner, first, n_units):
    width = getattr(first, "shape", (None,))[0] if getattr(first, "ndim", 0) == 1 else None
    if width is not None and width != n_units:
        raise InputError(f"these {type(owner).__name__} were made for {width} units but the layer "
                         f"has {n_units}; make them with {type(owner).__name__}({n_units}, ...)")


class _Watched:
    """Counts assignments to its attributes, so that a check of the object can be trusted until
    one of them changes (see :meth:`fastff.model.StepStats.check`)."""

    _version = 0

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        object.__setattr__(self, "_version", self._version + 1)

    @property
    def version(self):
        """How many assignments its attributes have had: a check holds while it stays."""
        return self._version


class ForwardStats(_Watched):
    """Per-unit saturation counters, sums and a layer histogram of the outputs h."""

    def __init__(self, n_units, activation, xp=np, bins=None):
        act = activations.get(activation)
        positive("n_units", n_units, integer=True)
        self.activation = act.name
        self.low, self.high = act.thresholds
        self.hist_lo, self.hist_hi = act.hist_range
        self.bins = int(positive("bins", config.HIST_BINS if bins is None else bins, integer=True))
        self.sat_low = xp.zeros(n_units, dtype=np.int64)
        self.sat_high = xp.zeros(n_units, dtype=np.int64)
        self.total = xp.zeros(n_units, dtype=np.float64)
        self.total_sq = xp.zeros(n_units, dtype=np.float64)
        self.hist = xp.zeros(self.bins, dtype=np.int64)
        self.rows = xp.zeros(1, dtype=np.int64)

    @property
    def n_units(self):
        return self.sat_low.shape[0]

    def arrays(self):
        """The accumulators a kernel writes."""
        return (self.sat_low, self.sat_high, self.total, self.total_sq, self.hist, self.rows)

    def check(self, n_units, activation, xp=np):
        """Raise InputError unless these accumulators fit a layer of ``n_units`` outputs of
        ``activation`` on the array module ``xp`` (a kernel indexes them without checks)."""
        if not isinstance(self, ForwardStats):
            raise InputError(f"stats must be a ForwardStats, got {type(self).__name__}")
        act = activations.get(activation).name
        if self.activation != act:
            raise InputError(f"these ForwardStats count {self.activation!r} saturation but the "
                             f"layer is {act!r}; make them with ForwardStats(n, {act!r})")
        _check_width(self, self.sat_low, n_units)
        if not (isinstance(self.bins, int) and self.bins >= 1):
            raise InputError(f"ForwardStats.bins must be a positive integer, got {self.bins!r}")
        check_arrays(self, {"sat_low": ((n_units,), np.int64), "sat_high": ((n_units,), np.int64),
                             "total": ((n_units,), np.float64),
                             "total_sq": ((n_units,), np.float64),
                             "hist": ((self.bins,), np.int64), "rows": ((1,), np.int64)}, xp)
        for name in ("low", "high", "hist_lo", "hist_hi"):
            if not isinstance(getattr(self, name), (int, float)):
                raise InputError(f"ForwardStats.{name} must be a number")
        if not (math.isfinite(self.hist_lo) and math.isfinite(self.hist_hi)
                and self.hist_lo < self.hist_hi):
            raise InputError(f"ForwardStats histogram range [{self.hist_lo}, {self.hist_hi}) "
                             "must be finite and increasing")
        return self

    def _repr_html_(self):
        from ..notebook import forward_stats_html
        return forward_stats_html(self)

    def reset(self):
        """Zero every accumulator in place."""
        for a in (self.sat_low, self.sat_high, self.total, self.total_sq, self.hist, self.rows):
            a.fill(0)

    def sums(self):
        """The sums :meth:`summary` is made of, as one float64 array where the accumulators
        are (a GPU's statistics are read back in one transfer): rows, sum and sum of squares of
        h, saturated low and high, dead units (relu: output 0 for every row seen)."""
        xp = array_module(self.total)
        dead = (self.sat_low == self.rows[0]).sum() if self.activation == "relu" else \
            self.rows[0] * 0
        return xp.stack([v.astype(np.float64) for v in (
            self.rows[0], self.total.sum(), self.total_sq.sum(), self.sat_low.sum(),
            self.sat_high.sum(), dead)])

    def summary(self, sums=None):
        """Layer scalars: saturated fractions, mean and std of h, dead-unit fraction (relu).
        ``sums``: :meth:`sums` already on the host."""
        rows, total, total_sq, low, high, dead = to_host(self.sums() if sums is None else sums)
        count = int(rows) * self.n_units
        if count == 0:
            nan = float("nan")
            return dict(sat_low=nan, sat_high=nan, mean=nan, std=nan, dead=nan)
        mean = float(total) / count
        var = max(float(total_sq) / count - mean * mean, 0.0)
        return dict(sat_low=float(low) / count, sat_high=float(high) / count, mean=mean,
                    std=var ** 0.5,
                    dead=float(dead) / self.n_units if self.activation == "relu" else 0.0)


class BackwardStats(_Watched):
    """Sums of the back-propagated gradient dC/ds per unit and of the weight gradient."""

    def __init__(self, n_units, xp=np, weight_grad=True):
        positive("n_units", n_units, integer=True)
        # Measuring dC/dW costs the kernel an extra product per weight; per-step monitoring
        # leaves it off and measures it on the monitor set instead.
        self.weight_grad = bool(weight_grad)
        self.delta_total = xp.zeros(n_units, dtype=np.float64)
        self.delta_total_sq = xp.zeros(n_units, dtype=np.float64)
        self.grad_w_total = xp.zeros(1, dtype=np.float64)
        self.grad_w_total_sq = xp.zeros(1, dtype=np.float64)
        # rows and steps share one array so that a kernel updates both in one argument
        self.counts = xp.zeros(2, dtype=np.int64)

    @property
    def rows(self):
        return self.counts[0:1]

    @property
    def steps(self):
        return self.counts[1:2]

    def _repr_html_(self):
        from ..notebook import backward_stats_html
        return backward_stats_html(self)

    def reset(self):
        """Zero every accumulator in place."""
        for a in (self.delta_total, self.delta_total_sq, self.grad_w_total,
                  self.grad_w_total_sq, self.counts):
            a.fill(0)

    @property
    def n_units(self):
        return self.delta_total.shape[0]

    def arrays(self):
        """The accumulators a kernel writes."""
        return (self.delta_total, self.delta_total_sq, self.grad_w_total, self.grad_w_total_sq,
                self.counts)

    def check(self, n_units, xp=np):
        """Raise InputError unless these accumulators fit a layer of ``n_units`` outputs on
        the array module ``xp`` (a kernel indexes them without checks)."""
        if not isinstance(self, BackwardStats):
            raise InputError(f"stats must be a BackwardStats, got {type(self).__name__}")
        _check_width(self, self.delta_total, n_units)
        check_arrays(self, {"delta_total": ((n_units,), np.float64),
                             "delta_total_sq": ((n_units,), np.float64),
                             "grad_w_total": ((1,), np.float64),
                             "grad_w_total_sq": ((1,), np.float64),
                             "counts": ((2,), np.int64)}, xp)
        return self

    def sums(self):
        """The sums :meth:`summary` is made of, as one float64 array where the accumulators
        are: rows, steps, the sums of dC/ds and its square, of dC/dW and its square."""
        xp = array_module(self.delta_total)
        return xp.stack([v.astype(np.float64) for v in (
            self.counts[0], self.counts[1], self.delta_total.sum(), self.delta_total_sq.sum(),
            self.grad_w_total[0], self.grad_w_total_sq[0])])

    def summary(self, n_in, sums=None):
        """Layer scalars: std of dC/ds over units and rows, std of dC/dW entries (over steps).
        ``sums``: :meth:`sums` already on the host."""
        rows, steps, d_total, d_sq, w_total, w_sq = to_host(self.sums() if sums is None else sums)
        rows, steps = int(rows), int(steps)
        n_units = self.delta_total.shape[0]
        out = dict(delta_std=float("nan"), grad_w_std=float("nan"))
        if rows:
            m = float(d_total) / (rows * n_units)
            out["delta_std"] = max(float(d_sq) / (rows * n_units) - m * m, 0.0) ** 0.5
        if steps and self.weight_grad:  # not measured: NaN, never a made-up 0
            count = steps * n_in * n_units
            m = float(w_total) / count
            out["grad_w_std"] = max(float(w_sq) / count - m * m, 0.0) ** 0.5
        return out
