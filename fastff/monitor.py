"""The paper's per-layer measurements of a network at one moment, on a fixed monitor set.

Glorot & Bengio (2010) watch a network through a fixed set of 300 test examples (their
§2.3). :func:`measure` computes, for every hidden layer k = 1..L of a model:

==============  ==================================================================  ==========
name            what                                                                 paper
==============  ==================================================================  ==========
act_mean        mean of the activations h over examples and units                   Fig. 2
act_std         their standard deviation                                             Figs. 2,3
act_p98         98th percentile of |h|                                               Figs. 3,10
sat_low/high    fraction of (example, unit) pairs saturated low / high               Figs. 2-4
dead            fraction of relu units that are 0 on every example (0 otherwise)
delta_mean/std  the back-propagated gradient dC/ds on the pre-activation s, per
                example (C = -log P(y|x) of that example)                            Fig. 7
grad_w_mean/    the weight gradient dC/dW of the mean cost over the monitor set,
grad_w_std      over the entries of W                                                Figs. 8,9
jacobian_sv     mean singular value of J = diag(f'(s)) W^T = dh_k/dh_(k-1), the
                plain mean of the singular values (not the RMS), averaged over the
                first ``jacobian_examples`` examples                                 Eq. 17
==============  ==================================================================  ==========

and fixed-bin histograms ``act`` (over the activation's range, Figs. 4, 6), ``delta`` (Fig. 7)
and ``grad_w`` (Fig. 8). A histogram counts the values inside its range only; the fraction of
values outside it (relu outputs above 4, gradients beyond the shared +-4 std range) is kept
apart, in :attr:`Measurement.outside`, so that it never piles up in the end bins. The activation statistics come from the model's own fused forward
kernels (the same counters the training step fills); the rest is array code on the model's
device (NumPy or CuPy), so nothing is copied to the host but the results.

A model that has diverged is measured without crashing: its values are NaN and
:attr:`Measurement.finite` is False.
"""
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import activations, config
from .arrays import array_module, to_host
from .checks import float_array
from .errors import InputError
from .softmax import softmax_parts

SCALARS = ("act_mean", "act_std", "act_p98", "sat_low", "sat_high", "dead", "delta_mean",
           "delta_std", "grad_w_mean", "grad_w_std", "jacobian_sv")
HISTOGRAMS = ("act", "delta", "grad_w")


def per_example(z, y, name, xp=np):
    """Mean cost, error and the per-example gradient dC/dz (no 1/n factor) in float64 maths,
    for measurements (:mod:`fastff.monitor`) rather than for the training step."""
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


@dataclass
class Measurement:
    """Everything :func:`measure` finds at one moment.

    Attributes
    ----------
    update, examples : int or None
        When it was taken (updates done, training examples seen), if known.
    loss, error : float
        Mean NLL and classification error on the measured examples.
    scalars : dict of str -> ndarray (L,)
        One value per hidden layer for every name in :data:`SCALARS` (layer 1 first).
    hists : dict of str -> ndarray (L, bins) of int64
        Counts per bin for ``act``, ``delta``, ``grad_w``, of the values inside the range.
    edges : dict of str -> ndarray (bins + 1,)
        Bin edges of each histogram (shared by the layers).
    outside : dict of str -> ndarray (L,)
        Per histogram, the fraction of each layer's values outside its range (NaN: unknown).
    finite : bool
        False when the network produced NaN or inf.
    """

    update: int = None
    examples: int = None
    loss: float = float("nan")
    error: float = float("nan")
    scalars: dict = field(default_factory=dict)
    hists: dict = field(default_factory=dict)
    edges: dict = field(default_factory=dict)
    outside: dict = field(default_factory=dict)
    finite: bool = True

    @property
    def n_layers(self):
        return len(self.scalars["act_std"])

    def layer(self, k):
        """The scalars of hidden layer ``k`` (1 = first hidden layer) as a dict."""
        if not 1 <= k <= self.n_layers:
            raise InputError(f"layer must be in 1..{self.n_layers}, got {k}")
        return {name: float(v[k - 1]) for name, v in self.scalars.items()}

    def table(self):
        """A plain-text table: one line per layer, one column per scalar."""
        head = "layer " + " ".join(f"{n:>12}" for n in SCALARS)
        lines = [head]
        for k in range(1, self.n_layers + 1):
            row = self.layer(k)
            lines.append(f"{k:>5} " + " ".join(f"{row[n]:>12.4g}" for n in SCALARS))
        state = "" if self.finite else "  NOT FINITE: the network has diverged (NaN/inf)"
        return (f"update {self.update}: loss {self.loss:.4g}, error {self.error:.4f}{state}\n"
                + "\n".join(lines))

    def __repr__(self):
        return f"Measurement(update={self.update}, layers={self.n_layers}, finite={self.finite})"

    def _repr_html_(self):
        from .notebook import box, measurement_table
        return box(repr(self), measurement_table(self))


def measure(model, x, y, *, jacobian_examples=None, update=None, examples=None):
    """Measure every hidden layer of ``model`` on the examples ``x``, ``y``.

    Parameters
    ----------
    model : MLP
    x : ndarray (n, n_in)
        The monitor set (the paper uses 300 fixed test examples).
    y : ndarray (n,)
        Its class ids.
    jacobian_examples : int, optional
        How many of the first rows get their layer Jacobians decomposed
        (default :data:`fastff.config.JACOBIAN_EXAMPLES`; 0 skips, giving NaN).
    update, examples : int, optional
        Stored in the result for the record.

    Returns
    -------
    Measurement
    """
    x = model.check_x(x)  # on the model's device, as is y below
    y = model.check_y(y, x.shape[0])
    n_jac = config.JACOBIAN_EXAMPLES if jacobian_examples is None else int(jacobian_examples)
    if n_jac < 0:
        raise InputError(f"jacobian_examples must be >= 0, got {jacobian_examples}")
    xp = model.backend.xp
    act = activations.get(model.activation)
    L = model.n_hidden

    stats = model.new_stats()
    with np.errstate(all="ignore"):
        hs = model.forward_all(x, stats)
        loss, error, grad = per_example(hs[-1], y, model.loss, xp)  # per-example dC/dz
        deltas, grad_ws = _backward(model, x, hs, grad, act, xp)

    out = Measurement(update=update, examples=examples, loss=loss, error=error)
    sc = {name: np.full(L, np.nan) for name in SCALARS}
    for k in range(L):
        s = stats.forward[k].summary()
        sc["act_mean"][k], sc["act_std"][k] = s["mean"], s["std"]
        sc["sat_low"][k], sc["sat_high"][k], sc["dead"][k] = s["sat_low"], s["sat_high"], s["dead"]
        sc["act_p98"][k] = float(xp.percentile(xp.abs(hs[k]).ravel(), 98.0))
        sc["delta_mean"][k], sc["delta_std"][k] = _mean_std(deltas[k], xp)
        sc["grad_w_mean"][k], sc["grad_w_std"][k] = _mean_std(grad_ws[k], xp)
    sc["jacobian_sv"][:] = jacobian_mean_singular_values(model, hs, n_jac, xp)
    out.scalars = sc

    lo, hi = act.hist_range
    out.edges["act"] = np.linspace(lo, hi, config.HIST_BINS + 1)
    # the kernels' histogram clips outside values into the end bins: take them back out
    act_hist = np.stack([to_host(s.hist) for s in stats.forward]).astype(np.int64)
    below = np.array([int((hs[k] < lo).sum()) for k in range(L)], np.int64)
    above = np.array([int((hs[k] > hi).sum()) for k in range(L)], np.int64)
    if L:
        act_hist[:, 0] -= below
        act_hist[:, -1] -= above
    out.hists["act"] = act_hist
    out.outside["act"] = np.array([(below[k] + above[k]) / hs[k].size for k in range(L)])
    for name, values in (("delta", deltas), ("grad_w", grad_ws)):
        stds = sc[name + "_std"][np.isfinite(sc[name + "_std"])]
        half = config.GRAD_HIST_SIGMAS * stds.max() if stds.size else 1.0
        if not half > 0:
            half = 1.0
        out.edges[name] = np.linspace(-half, half, config.GRAD_HIST_BINS + 1)
        counts = [histogram(v, -half, half, config.GRAD_HIST_BINS, xp) for v in values]
        out.hists[name] = np.stack([c for c, _ in counts]) if L else np.zeros((0, config.GRAD_HIST_BINS), np.int64)
        out.outside[name] = np.array([n / values[k].size for k, (_, n) in enumerate(counts)])

    checked = [v for name, v in sc.items() if name != "jacobian_sv" or n_jac > 0]
    out.finite = bool(np.isfinite(loss) and all(np.isfinite(v).all() for v in checked))
    if not out.finite:
        warnings.warn(f"measured a network that is not finite (NaN/inf) at update {update}; "
                      "its statistics are NaN", RuntimeWarning, stacklevel=2)
    return out


def jacobian_mean_singular_values(model, hs, n_examples, xp=np):
    """Mean singular value of each hidden layer's Jacobian, averaged over examples (Eq. 17).

    For layer k with weights W (n_in, n_out) and output h = f(x W + b), the Jacobian of one
    example is J = diag(f'(s)) W^T (n_out, n_in). Its singular values are the square roots of
    the eigenvalues of the smaller Gram matrix: D (W^T W) D when n_out <= n_in (W^T W is
    shared by all examples), else (W D)(W D)^T. The result is the plain mean of the singular
    values (the paper's §4.2.2, Eq. 17), one float per hidden layer; NaN when ``n_examples`` is 0 or
    the layer is not finite. Through the Gram matrix a singular value of exactly 0 comes out
    as at most sqrt(eps * |G|) (about 3e-4 in float32), far below what the mean resolves.
    """
    act = activations.get(model.activation)
    out = np.full(model.n_hidden, np.nan)
    n_examples = min(int(n_examples), hs[0].shape[0])
    if n_examples <= 0:
        return out
    for k in range(model.n_hidden):
        W = model.params[k][0]
        n_in, n_out = W.shape
        d = act.derivative(hs[k][:n_examples], xp)
        if not (bool(xp.isfinite(W).all()) and bool(xp.isfinite(d).all())):
            continue
        # every example's Gram matrix in one stack, decomposed by one batched call (on a GPU,
        # one read-back a layer instead of one per example)
        if n_out <= n_in:
            grams = d[:, :, None] * (W.T @ W)[None] * d[:, None, :]
        else:
            wd = W[None] * d[:, None, :]
            grams = wd @ wd.transpose(0, 2, 1)
        eig = xp.linalg.eigvalsh(grams)
        out[k] = float(xp.sqrt(xp.clip(eig, 0, None)).mean(axis=1).mean())
    return out


def histogram(values, lo, hi, bins, xp=np):
    """Counts of ``values`` in ``bins`` equal bins over [lo, hi] (``hi`` in the last bin).

    Returns (host int64 array of counts, number of values outside [lo, hi]); NaN is counted
    nowhere, +-inf is outside.
    """
    v = values.ravel().astype(np.float64)
    v = v[~xp.isnan(v)]
    inside = (v >= lo) & (v <= hi)
    idx = xp.floor((v[inside] - lo) * (bins / (hi - lo)))
    idx = xp.clip(idx, 0, bins - 1).astype(np.int64)
    counts = to_host(xp.bincount(idx, minlength=bins)).astype(np.int64)
    return counts, int(v.size - int(inside.sum()))


def _backward(model, x, hs, grad, act, xp):
    """Per-example dC/ds of every hidden layer and dC/dW of the mean cost (no update)."""
    n = x.shape[0]
    deltas, grad_ws = [None] * model.n_hidden, [None] * model.n_hidden
    g = grad @ model.params[-1][0].T  # dC/dh of the top hidden layer
    for k in range(model.n_hidden - 1, -1, -1):
        delta = g * act.derivative(hs[k], xp)
        inp = hs[k - 1] if k > 0 else x
        deltas[k] = delta
        grad_ws[k] = (inp.T @ delta) / n
        if k > 0:
            g = delta @ model.params[k][0].T
    return deltas, grad_ws


def _mean_std(a, xp):
    a64 = a.astype(np.float64)
    mean = float(a64.mean())
    return mean, float(xp.sqrt(((a64 - mean) ** 2).mean()))


class Stats:
    """Measurements over training, in update order: what a run's ``stats.npz`` holds.

    Index it (``stats[-1]``) or iterate for :class:`Measurement` objects; the properties and
    :meth:`scalar`, :meth:`hist`, :meth:`edges` give stacked arrays with time first.
    """

    def __init__(self, measurements=()):
        self.measurements = list(measurements)

    def append(self, m):
        self.measurements.append(m)

    def __len__(self):
        return len(self.measurements)

    def __getitem__(self, i):
        return self.measurements[i]

    def __iter__(self):
        return iter(self.measurements)

    def __repr__(self):
        ups = self.updates
        span = f"updates {ups[0]}..{ups[-1]}" if len(ups) else "empty"
        return f"Stats({len(self)} snapshots, {span})"

    def _repr_html_(self):
        from .notebook import stats_html
        return stats_html(self)

    @property
    def updates(self):
        return np.array([m.update for m in self], dtype=np.int64)

    @property
    def examples(self):
        return np.array([m.examples for m in self], dtype=np.int64)

    @property
    def loss(self):
        return np.array([m.loss for m in self])

    @property
    def error(self):
        return np.array([m.error for m in self])

    def scalar(self, name):
        """Array (T, L) of one of :data:`SCALARS`."""
        _known("statistic", name, SCALARS)
        return np.stack([m.scalars[name] for m in self])

    def hist(self, name):
        """Array (T, L, bins) of counts of one of :data:`HISTOGRAMS`."""
        _known("histogram", name, HISTOGRAMS)
        return np.stack([m.hists[name] for m in self])

    def edges(self, name):
        """Array (T, bins + 1) of the bin edges of one of :data:`HISTOGRAMS`."""
        _known("histogram", name, HISTOGRAMS)
        return np.stack([m.edges[name] for m in self])

    def outside(self, name):
        """Array (T, L): fraction of each layer's values outside the range of a histogram."""
        _known("histogram", name, HISTOGRAMS)
        return np.stack([m.outside.get(name, np.full(m.n_layers, np.nan)) for m in self])

    def until(self, update):
        """The snapshots taken at or before ``update``."""
        return Stats(m for m in self if m.update <= update)

    def to_arrays(self):
        """The arrays saved in ``stats.npz`` (names as in the README's run-record section)."""
        out = dict(updates=self.updates, examples=self.examples, loss=self.loss,
                   error=self.error, finite=np.array([m.finite for m in self]))
        for name in SCALARS:
            out[name] = self.scalar(name)
        for name in HISTOGRAMS:
            out[f"hist_{name}"] = self.hist(name)
            out[f"edges_{name}"] = self.edges(name)
            out[f"outside_{name}"] = self.outside(name)
        return out

    @classmethod
    def from_arrays(cls, arrays):
        """Inverse of :meth:`to_arrays`."""
        missing = [k for k in ("updates", "examples", "loss", "error", "finite") + SCALARS
                   if k not in arrays]
        missing += [f"{p}_{n}" for n in HISTOGRAMS for p in ("hist", "edges")
                    if f"{p}_{n}" not in arrays]
        if missing:
            raise InputError(f"not a fastff stats file: arrays {', '.join(missing)} are missing")
        T = len(arrays["updates"])
        L = np.shape(arrays[SCALARS[0]])[1] if np.ndim(arrays[SCALARS[0]]) == 2 else -1
        bad = [k for k in ("examples", "loss", "error", "finite") if np.shape(arrays[k]) != (T,)]
        bad += [n for n in SCALARS if np.shape(arrays[n]) != (T, L)]
        for n in HISTOGRAMS:
            h, e = np.shape(arrays[f"hist_{n}"]), np.shape(arrays[f"edges_{n}"])
            o = np.shape(arrays.get(f"outside_{n}", np.zeros((T, L))))
            if len(h) != 3 or h[:2] != (T, L) or e != (T, h[2] + 1) or o != (T, L):
                bad.append(n)
        if bad or L < 0:
            raise InputError(f"inconsistent fastff stats file: the arrays {', '.join(bad)} do not "
                             f"match {T} snapshots of {L} layers")
        out = cls()
        for t in range(len(arrays["updates"])):
            out.append(Measurement(
                update=int(arrays["updates"][t]), examples=int(arrays["examples"][t]),
                loss=float(arrays["loss"][t]), error=float(arrays["error"][t]),
                finite=bool(arrays["finite"][t]),
                scalars={n: np.asarray(arrays[n][t]) for n in SCALARS},
                hists={n: np.asarray(arrays[f"hist_{n}"][t]) for n in HISTOGRAMS},
                edges={n: np.asarray(arrays[f"edges_{n}"][t]) for n in HISTOGRAMS},
                outside={n: np.asarray(arrays[f"outside_{n}"][t]) for n in HISTOGRAMS
                         if f"outside_{n}" in arrays}))
        return out

    def rows(self):
        """Tidy rows (update, examples, source, layer, statistic, value); layer 0 is the
        whole network."""
        for m in self:
            yield (m.update, m.examples, "monitor", 0, "loss", m.loss)
            yield (m.update, m.examples, "monitor", 0, "error", m.error)
            for name in SCALARS:
                for k, v in enumerate(m.scalars[name], start=1):
                    yield (m.update, m.examples, "monitor", k, name, float(v))


class Monitor:
    """A fixed monitor set and the measurements taken on it over training.

    Parameters
    ----------
    x, y : ndarray
        The monitor set; the paper uses 300 fixed test examples (``Monitor.from_dataset``).
    jacobian_examples : int, optional
        See :func:`measure`.

    Examples
    --------
    >>> mon = fastff.Monitor.from_dataset(fastff.data.load("shapeset"))   # doctest: +SKIP
    >>> mon(model, update=0).table()                                      # doctest: +SKIP
    """

    def __init__(self, x, y, *, jacobian_examples=None):
        float_array("x", x, 2)
        self.x = x
        self.y = array_module(y).asarray(y)  # a CuPy array stays on its device
        self.jacobian_examples = jacobian_examples
        self.stats = Stats()

    @classmethod
    def from_dataset(cls, dataset, n=None, **kwargs):
        """The first ``n`` test examples of a dataset (default :data:`config.MONITOR_EXAMPLES`)."""
        return cls(*dataset.monitor_set(config.MONITOR_EXAMPLES if n is None else int(n)),
                   **kwargs)

    def warm_up(self, model):
        """Measure ``model`` on two examples of the set and keep nothing: compiles (or loads)
        the measurement's kernels, so that a run does it before its clock starts."""
        measure(model, self.x[:2], self.y[:2], jacobian_examples=1)

    def __call__(self, model, update=None, examples=None, jacobian=True):
        """Measure ``model`` on the monitor set, keep the result in :attr:`stats`, return it.

        ``jacobian=False`` skips the Jacobian singular values (NaN) for a cheaper snapshot.
        """
        m = measure(model, self.x, self.y, update=update, examples=examples,
                    jacobian_examples=self.jacobian_examples if jacobian else 0)
        self.stats.append(m)
        return m


def _known(kind, name, valid):
    if name not in valid:
        raise InputError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")
