"""The paper's claims, each beside what fastff's runs measured and the verdict.

Each claim cites the paper's own table, figure, section or equation, and says the property it
measures (its ``test``). Three verdicts: ``agrees``, ``disagrees`` and ``inconclusive`` (the
runs cannot decide), besides ``agrees in rank only`` (a model that is worst because it never
left chance) and ``n/a: ...`` (runs missing). Where the paper names no number (saturation,
"layers move together"), the operational test is fastff's; thresholds are in
:data:`SATURATED`, :data:`JACOBIAN_RANGES` and :data:`LEVEL_RATIO`.

Differences in test error (:func:`fastff.reproduction.table.comparison`):

* "A beats B": agrees when A's error is lower at p < 0.005 (the paper's level), disagrees
  when it is higher at that level, else inconclusive. With several seeds the verdict rests on
  the paired t-test over seeds (another seed is another initialization and training stream,
  what an initialization claim is about), the matched-pairs Cochran-Mantel-Haenszel test
  pooled over seeds beside it; with one seed on McNemar's test, which counts only the test
  set's sampling of two trained nets.
* "robust to the initialization" (no difference): agrees only through an equivalence, when
  the difference's interval for two one-sided tests at 0.005 lies inside the margin
  :func:`margin`; disagrees when it lies wholly outside; else inconclusive. A p-value above
  0.005 is never agreement.
"""
import functools

import numpy as np

from ..files import atomic_write_bytes
from ..report.runs import load_run
from .chosen import chosen_runs, test_outcomes
from .glorot2010 import DATASET_TITLES, PAPER_TABLE1, SIGNIFICANCE_LEVEL
from .table import comparison, csv_bytes

CLAIM_COLUMNS = ("claim", "source", "paper", "fastff", "test", "verdict")
AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"
# abs(h) at or above this 98th percentile counts as a saturated tanh layer (the paper has no
# threshold: its Fig. 3 shows the 98th percentile reaching 1)
SATURATED = 0.99
# the mean singular value of the layer Jacobians at initialization, standard and normalized
# tanh: "about 0.5" and "about 0.8" (§4.2.2; the plain mean of
# the singular values of a 5x1000 tanh net computes to 0.46-0.49 and 0.65-0.78 on layers 2-5)
JACOBIAN_RANGES = {"Tanh": (0.40, 0.60), "Tanh N": (0.65, 0.95)}
# Figs. 6 and 7: the geometric mean of the ratio of consecutive layers' std (activations going
# up, back-propagated gradients going down) below this shrinks with depth, at or above it is
# level: the geometric midpoint of the two initializations' linear-regime ratios, 1/sqrt(3)
# (standard, n Var[W] = 1/3, Eq. 15) and 1 (normalized with equal widths, Eq. 12). Measured at
# update 0 on Shapeset's 5x1000 tanh nets: 0.56-0.57 and 0.88-0.90.
LEVEL_RATIO = float(np.sqrt(1 / np.sqrt(3)))
# Fig. 8: the weight gradients' std "about the same in every layer" (Eq. 14): the largest
# layer's within this factor of the smallest's (measured at update 0: 1.06-1.10, where the
# activations' std spans a factor of 9 under the standard init)
WEIGHT_GRADIENT_SPREAD = 1.25
# Test error (%) of a model that never left chance: the test sets' majority class (Shapeset-3x2:
# a single shape, 1/6 of the images; MNIST: the digit 1, 1,135 of 10,000), less a point
CHANCE = {"shapeset": 83.33, "mnist": 88.65, "cifar10": 90.0, "small_imagenet": 90.0}


def margin(dataset, error_a, error_b):
    """The equivalence margin of "robust to the initialization" on ``dataset``, in points.

    The paper says softsign is robust to the initialization *in contrast with tanh* (Fig. 11,
    Table 1): its claim is that the initialization moves softsign's error by much less than
    tanh's. fastff's margin is a quarter of the relative difference the paper reports between
    Tanh and Tanh N on the same dataset (the gap over the pair's mean: Shapeset 54%, MNIST
    7.1%), applied to the mean of the two measured errors: on Shapeset at 55% error, 7.5
    points; on MNIST at 2%, 0.035 points (about 4 of 10,000 test images: an equivalence there
    cannot be shown with one test set, and the verdict says so).
    """
    tanh, tanh_n = PAPER_TABLE1["Tanh"][dataset], PAPER_TABLE1["Tanh N"][dataset]
    relative = abs(tanh - tanh_n) / ((tanh + tanh_n) / 2)
    return relative / 4 * (error_a + error_b) / 2


def _row(claim, source, paper, fastff, test, verdict):
    return dict(claim=claim, source=source, paper=paper, fastff=fastff, test=test,
                verdict=verdict)


def _errors(table, dataset):
    return {t["model"]: t["test_error"] for t in table
            if t["dataset"] == dataset and t["test_error"] != ""}


def _measured(c, a, b, errors):
    """The text of a comparison ``c`` of ``a`` against ``b``."""
    text = (f"{a} {errors[a]:.2f} vs {b} {errors[b]:.2f}: {c['diff']:+.2f} points, "
            f"{100 * (1 - SIGNIFICANCE_LEVEL):g}% interval [{c['low']:+.2f}, {c['high']:+.2f}], "
            f"p = {c['p']:.2g} ({c['test']})")
    if c["seeds"] > 1 and c["p_pooled"] is not None:
        text += f"; pooled over the seeds' test outcomes p = {c['p_pooled']:.2g} (CMH)"
    return text


def _compare(table, compare, dataset, better, worse, claim):
    """A Table 1 claim that ``better`` has a lower test error than ``worse``."""
    errors = _errors(table, dataset)
    paper = (f"{better} {PAPER_TABLE1[better][dataset]:.2f} vs {worse} "
             f"{PAPER_TABLE1[worse][dataset]:.2f}")
    test = (f"{better} minus {worse} below 0 at p < {SIGNIFICANCE_LEVEL}: with several seeds the "
            "paired t-test over seeds (another seed is another initialization and stream), the "
            "CMH test pooled over them beside it; with one seed McNemar's test (the trained "
            "nets differ, which says nothing of another initialization)")
    c = compare(dataset, better, worse) if better in errors and worse in errors else None
    if c is None:
        return _row(claim, "Table 1", paper, "", test, "n/a: the runs are missing")
    significant = c["p"] < SIGNIFICANCE_LEVEL
    verdict = (AGREES if significant and c["diff"] < 0 else
               DISAGREES if significant and c["diff"] > 0 else INCONCLUSIVE)
    return _row(claim, "Table 1", paper, _measured(c, better, worse, errors), test, verdict)


def _robust(table, compare, dataset, a, b, claim):
    """A Table 1 claim of no difference, judged by an equivalence (:func:`margin`)."""
    errors = _errors(table, dataset)
    paper = f"{a} {PAPER_TABLE1[a][dataset]:.2f} vs {b} {PAPER_TABLE1[b][dataset]:.2f}"
    c = compare(dataset, a, b) if a in errors and b in errors else None
    if c is None:
        return _row(claim, "Table 1", paper, "", "", "n/a: the runs are missing")
    delta = margin(dataset, errors[a], errors[b])
    test = (f"equivalence: the difference's {100 * (1 - 2 * SIGNIFICANCE_LEVEL):g}% interval (two "
            f"one-sided tests at {SIGNIFICANCE_LEVEL}) inside ±{delta:.2f} points, a quarter of "
            "the paper's relative Tanh-Tanh N gap on this dataset; wholly outside it: "
            "disagrees")
    text = (_measured(c, a, b, errors) + f"; {100 * (1 - 2 * SIGNIFICANCE_LEVEL):g}% interval "
            f"[{c['eq_low']:+.2f}, {c['eq_high']:+.2f}], margin ±{delta:.2f}")
    verdict = (AGREES if -delta < c["eq_low"] and c["eq_high"] < delta else
               DISAGREES if c["eq_low"] > delta or c["eq_high"] < -delta else INCONCLUSIVE)
    return _row(claim, "Table 1", paper, text, test, verdict)


def _worst(table, compare, dataset):
    """Table 1's claim that the 5-layer sigmoid net is the worst of its models."""
    title = DATASET_TITLES[dataset]
    claim = f"{title}: the 5-layer sigmoid net is the worst of Table 1's models"
    paper = f"Sigmoid {PAPER_TABLE1['Sigmoid'][dataset]:.2f}, the highest"
    five = {m: e for m, e in _errors(table, dataset).items() if m in PAPER_TABLE1}
    test = (f"Sigmoid highest, p < {SIGNIFICANCE_LEVEL} against the next worst; at chance (within "
            f"a point of the majority class's error, {CHANCE[dataset]:.2f}%) it agrees in rank "
            "only")
    if "Sigmoid" not in five or len(five) < 2:
        return _row(claim, "Table 1", paper, "", test, "n/a: runs missing")
    error, other = max((e, m) for m, e in five.items() if m != "Sigmoid")
    c = compare(dataset, "Sigmoid", other)
    if c is None:
        return _row(claim, "Table 1", paper, "", test, "n/a: no test for the pair")
    text = _measured(c, "Sigmoid", other, five)
    significant = c["p"] < SIGNIFICANCE_LEVEL
    if significant and c["diff"] > 0:
        at_chance = five["Sigmoid"] >= CHANCE[dataset] - 1
        verdict = "agrees in rank only" if at_chance else AGREES
        if at_chance:
            text += "; Sigmoid never left chance"
    else:
        verdict = DISAGREES if significant else INCONCLUSIVE
    return _row(claim, "Table 1", paper, text, test, verdict)


def table_claims(table, compare):
    """Table 1's claims on every dataset the table has. ``compare(dataset, a, b)`` is the
    comparison of two models (:func:`fastff.reproduction.table.comparison`) or None."""
    out = []
    for d in dict.fromkeys(t["dataset"] for t in table):
        title = DATASET_TITLES[d]
        if not _errors(table, d):
            continue
        if d in ("shapeset", "mnist"):
            out.append(_compare(table, compare, d, "Tanh N", "Tanh",
                                f"{title}: normalized init beats standard init for tanh"))
            out.append(_robust(table, compare, d, "Softsign N", "Softsign",
                               f"{title}: softsign is robust to the initialization"))
        out.append(_worst(table, compare, d))
    return out


def _saturation_updates(run):
    """The update at which each hidden layer's 98th percentile of abs(h) first reaches
    :data:`SATURATED` (None: never), and the final percentiles."""
    u, p98 = run.stats.updates, run.stats.scalar("act_p98")
    first = []
    for k in range(p98.shape[1]):
        hit = np.nonzero(p98[:, k] >= SATURATED)[0]
        first.append(int(u[hit[0]]) if len(hit) else None)
    return first, p98[-1]


def _when(updates):
    return ", ".join(f"L{k + 1} {'never' if t is None else f'{t:,}'}"
                     for k, t in enumerate(updates))


def _sequential(first):
    """Layer 1 saturates, and no layer before the one below it."""
    if first[0] is None:
        return False
    seen = [t for t in first if t is not None]
    tail_never = all(t is None for t in first[len(seen):])
    return tail_never and all(a <= b for a, b in zip(seen, seen[1:]))


def _abs_hist(run, layer, when=-1):
    """(abs(h) bin centres, mass) of one layer's activation histogram at a snapshot."""
    m = run.stats[when]
    edges = m.edges["act"]
    centres = np.abs(0.5 * (edges[:-1] + edges[1:]))
    counts = m.hists["act"][layer].astype(np.float64)
    return centres, counts / max(counts.sum(), 1.0)


def layer_claims(runs):
    """The per-layer claims (Figs. 2-4, 6-8 and 10, Eq. 17) from Shapeset's chosen runs
    ``{model name: RunData}``."""
    tanh, soft, tanh_n = runs.get("Tanh"), runs.get("Softsign"), runs.get("Tanh N")
    return [_fig2(runs.get("Sigmoid depth 4")), _fig3(tanh),
            _less_saturated(soft, tanh, "Softsign", "Fig. 3 bottom",
                            "less saturation, and all layers move together"),
            _less_saturated(tanh_n, tanh, "Tanh N", "Fig. 10",
                            "looks like softsign: no layer-by-layer saturation"),
            _fig4(tanh, soft), *_at_init(tanh, tanh_n), _jacobian(runs)]


def _fig2(sig):
    claim = "The top hidden layer of the 4-layer sigmoid net saturates toward 0 early"
    source = "Fig. 2"
    paper = "layer 4's mean drops to about 0 almost immediately; the others stay above 0.5"
    test = ("the top layer's mean below 0.2 at the first snapshot after initialization, and the "
            "lowest of the layers")
    if sig is None or len(sig.stats) < 2:
        return _row(claim, source, paper, "", test, "n/a: the run is missing")
    mean = sig.stats.scalar("act_mean")
    first = mean[1]
    text = (f"at update {int(sig.stats.updates[1]):,}: layer means "
            + ", ".join(f"{v:.3f}" for v in first)
            + f"; the top layer's lowest {mean[:, -1].min():.3f}, final {mean[-1, -1]:.3f}")
    ok = first[-1] < 0.2 and first[-1] == first.min()
    return _row(claim, source, paper, text, test, AGREES if ok else DISAGREES)


def _fig3(tanh):
    claim = "Tanh (standard init): the layers saturate one after another, from the first"
    source, paper = "Fig. 3 top", "layer 1 saturates first, then 2, ..."
    test = (f"the update at which each layer's 98th percentile of abs(h) reaches {SATURATED}: "
            "layer 1 first, no layer before the one below it; no layer saturated within the "
            "run: inconclusive")
    if tanh is None:
        return _row(claim, source, paper, "", test, "n/a: the run is missing")
    first, final = _saturation_updates(tanh)
    text = _when(first) + "; final 98th percentiles " + ", ".join(f"{v:.3f}" for v in final)
    verdict = (INCONCLUSIVE if all(t is None for t in first) else
               AGREES if _sequential(first) else DISAGREES)
    return _row(claim, source, paper, text, test, verdict)


def _saturated_layers(run):
    """{update: number of layers whose 98th percentile of abs(h) is at least SATURATED}."""
    p98 = run.stats.scalar("act_p98")
    return {int(u): int(np.sum(row >= SATURATED)) for u, row in zip(run.stats.updates, p98)}


def _less_saturated(run, tanh, name, source, paper):
    """Figs. 3 bottom and 10: ``run``'s layers saturate less than standard tanh's at the same
    updates, and not one after another from the first."""
    claim = f"{name}: less saturation than tanh (standard init), no layer-by-layer saturation"
    test = (f"at every snapshot where tanh has a layer whose 98th percentile of abs(h) reaches "
            f"{SATURATED}, {name} has fewer such layers, and its layers do not saturate one "
            f"after another from the first; at least as many as tanh's at most of those "
            "snapshots, or that staircase: disagrees; tanh never saturating within the run: "
            "inconclusive")
    if run is None or tanh is None:
        return _row(claim, source, paper, "", test, "n/a: the runs are missing")
    first, _ = _saturation_updates(run)
    staircase = _sequential(first) and sum(t is not None for t in first) >= 2
    mine, theirs = _saturated_layers(run), _saturated_layers(tanh)
    compared = [u for u in sorted(set(mine) & set(theirs)) if u > 0 and theirs[u] > 0]
    fewer = sum(mine[u] < theirs[u] for u in compared)
    last = max(set(mine) & set(theirs))
    text = (f"{name} saturates at {_when(first)}; Tanh at {_when(_saturation_updates(tanh)[0])}; "
            f"{name} has fewer saturated layers at {fewer} of the {len(compared)} snapshots "
            f"where Tanh has any (at update {last:,}: {mine[last]} against {theirs[last]})")
    if staircase or (compared and fewer <= len(compared) / 2):
        verdict = DISAGREES
    elif compared and fewer == len(compared):
        verdict = AGREES
    else:
        verdict = INCONCLUSIVE
    return _row(claim, source, paper, text, test, verdict)


def _ratio(values):
    """The geometric mean of the ratio of consecutive values."""
    values = np.asarray(values, np.float64)
    return float(np.exp(np.mean(np.diff(np.log(values)))))


def _at_init(tanh, tanh_n):
    """Figs. 6-8: activations, back-propagated gradients and weight gradients at update 0,
    standard against normalized tanh, each a claim about how they vary across layers."""
    claims = (
        ("Fig. 6", "At initialization tanh's activations shrink from layer to layer under the "
                   "standard init and stay about level under the normalized one",
         "act_std", 1, "standard: the peak at 0 grows in higher layers; normalized: similar "
                       "across layers"),
        ("Fig. 7", "At initialization the back-propagated gradients dC/ds shrink from the top "
                   "layer down under the standard init and stay about level under the "
                   "normalized one",
         "delta_std", -1, "standard: smaller in lower layers (vanishing); normalized: no such "
                          "decrease"),
    )
    out = []
    for source, claim, name, direction, paper in claims:
        test = (f"the geometric mean of the ratio of consecutive layers' std ("
                f"{'going up' if direction > 0 else 'going down'}) at update 0: below "
                f"{LEVEL_RATIO:.2f} for standard, at least {LEVEL_RATIO:.2f} for normalized "
                "(the geometric midpoint of the linear regime's 1/sqrt(3) and 1)")
        found = _first_snapshot(tanh, tanh_n, name)
        if found is None:
            out.append(_row(claim, source, paper, "", test, "n/a: no snapshot at update 0"))
            continue
        ratios = [_ratio(v[::direction]) for v in found]
        text = "; ".join(f"{m}: std by layer " + ", ".join(f"{x:.3g}" for x in v)
                         + f", ratio {r:.2f}" for m, v, r in zip(("Tanh", "Tanh N"), found, ratios))
        ok = ratios[0] < LEVEL_RATIO <= ratios[1]
        out.append(_row(claim, source, paper, text, test, AGREES if ok else DISAGREES))
    claim = ("At initialization the weight gradients' variance is about the same in every "
             "layer, under either initialization")
    paper = "about the same in every layer even with the standard init (Eq. 14)"
    test = (f"the largest layer's std of dC/dW at update 0 within {WEIGHT_GRADIENT_SPREAD} times "
            "the smallest's, for both")
    found = _first_snapshot(tanh, tanh_n, "grad_w_std")
    if found is None:
        out.append(_row(claim, "Fig. 8", paper, "", test, "n/a: no snapshot at update 0"))
        return out
    spreads = [float(v.max() / v.min()) for v in found]
    text = "; ".join(f"{m}: " + ", ".join(f"{x:.3g}" for x in v) + f" (max/min {sp:.2f})"
                     for m, v, sp in zip(("Tanh", "Tanh N"), found, spreads))
    ok = all(sp <= WEIGHT_GRADIENT_SPREAD for sp in spreads)
    out.append(_row(claim, "Fig. 8", paper, text, test, AGREES if ok else DISAGREES))
    return out


def _first_snapshot(tanh, tanh_n, name):
    """Both runs' per-layer ``name`` at update 0, or None where either lacks it."""
    found = []
    for run in (tanh, tanh_n):
        if run is None or not len(run.stats) or int(run.stats.updates[0]) != 0:
            return None
        v = np.asarray(run.stats.scalar(name)[0], np.float64)
        if not (np.isfinite(v).all() and (v > 0).all()):
            return None
        found.append(v)
    return found


def _fig4(tanh, soft):
    claim = "At the end of training tanh's lower layers are saturated, softsign's sit at its knees"
    source = "Fig. 4"
    paper = "tanh: mass at ±1, strongest in the lower layers; softsign: modes near ±0.6 to ±0.8"
    test = ("tanh: the share of abs(h) >= 0.9 in layer 1 above the top layer's and above "
            "softsign's layer 1; softsign: the mode of abs(h) over 0.2 in [0.5, 0.9] in every "
            "layer")
    if tanh is None or soft is None:
        return _row(claim, source, paper, "", test, "n/a: the runs are missing")
    L = tanh.stats.scalar("act_p98").shape[1]
    share = lambda run, k: float(sum(m for c, m in zip(*_abs_hist(run, k)) if c >= 0.9))  # noqa: E731
    t1, tL, s1 = share(tanh, 0), share(tanh, L - 1), share(soft, 0)
    modes = []
    for k in range(soft.stats.scalar("act_p98").shape[1]):
        c, m = _abs_hist(soft, k)
        keep = c > 0.2
        modes.append(float(c[keep][np.argmax(m[keep])]) if keep.any() else float("nan"))
    text = (f"abs(h) >= 0.9: tanh layer 1 {100 * t1:.1f}%, top layer {100 * tL:.1f}%, softsign "
            f"layer 1 {100 * s1:.1f}%; softsign's abs(h) modes "
            + ", ".join(f"{v:.2f}" for v in modes))
    ok = t1 > tL and t1 > s1 and all(0.5 <= v <= 0.9 for v in modes)
    return _row(claim, source, paper, text, test, AGREES if ok else DISAGREES)


def _jacobian(runs):
    claim = ("The layer Jacobians' mean singular value at initialization: about 0.5 with "
             "standard init, about 0.8 with normalized init (tanh)")
    source = "§4.2.2, Eq. 17"
    test = (f"layers 2-5 at update 0 within {JACOBIAN_RANGES['Tanh']} (standard) and "
            f"{JACOBIAN_RANGES['Tanh N']} (normalized)")
    found = {}
    for name in ("Tanh", "Tanh N"):
        run = runs.get(name)
        if run is not None and len(run.stats):
            sv = run.stats.scalar("jacobian_sv")[0]
            if np.isfinite(sv[1:]).all():
                found[name] = sv
    if len(found) < 2:
        return _row(claim, source, "0.5 and 0.8", "", test,
                    "n/a: no Jacobian measured at update 0")
    text = "; ".join(f"{n}: " + ", ".join(f"{v:.2f}" for v in sv) for n, sv in found.items())
    ok = all(lo <= v <= hi for n, (lo, hi) in JACOBIAN_RANGES.items() for v in found[n][1:])
    return _row(claim, source, "0.5 and 0.8", text, test, AGREES if ok else DISAGREES)


def markdown(rows):
    """The claims table as markdown."""
    lines = ["| the paper's claim | source | the paper | fastff | verdict |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['claim']} | {r['source']} | {r['paper']} | {r['fastff']} | "
                     f"{r['verdict']} |")
    lines += ["", "How each is judged:", ""]
    lines += [f"- {r['claim']}: {r['test']}." for r in rows if r["test"]]
    return "\n".join(lines) + "\n"


def write_claims(out, rows, table):
    """The paper's claims beside the runs' numbers (:mod:`.claims`), written to
    ``claims.csv`` and ``claims.md``."""
    runs = {m: load_run(out / "runs" / name, title=m)
            for m, name in chosen_runs(rows, table, "shapeset").items()}
    outcomes = functools.partial(test_outcomes, out / "runs")
    compare = functools.partial(comparison, rows, outcomes=outcomes)
    claims = table_claims(table, compare) + (layer_claims(runs) if runs else [])
    atomic_write_bytes(out / "claims.csv", csv_bytes(CLAIM_COLUMNS, claims))
    atomic_write_bytes(out / "claims.md", markdown(claims).encode())
    return claims
