"""The paper's claims, each beside what fastff's runs measured and whether they agree.

Each claim cites the paper's own table, figure, section or equation. Where
the paper names no number (saturation, "layers move together"), the operational test is
fastff's and is said in the claim's ``test`` text; thresholds are in :data:`SATURATED` and
:data:`JACOBIAN_RANGES`. A claim agrees (``yes``), disagrees (``no``), or cannot be judged from
the runs at hand (``n/a``, with the reason). Differences in test error agree only where they
are significant at the paper's level (p < 0.005) in the paper's direction.
"""
import numpy as np

from .glorot2010 import DATASET_TITLES, PAPER_TABLE1, SIGNIFICANCE_LEVEL

CLAIM_COLUMNS = ("claim", "source", "paper", "fastff", "test", "agrees")
# abs(h) at or above this 98th percentile counts as a saturated tanh layer (the paper has no
# threshold: its Fig. 3 shows the 98th percentile reaching 1)
SATURATED = 0.99
# the mean singular value of the layer Jacobians at initialization, standard and normalized
# tanh: "about 0.5" and "about 0.8" (§4.2.2; the plain mean of
# the singular values of a 5x1000 tanh net computes to 0.46-0.49 and 0.65-0.78 on layers 2-5)
JACOBIAN_RANGES = {"Tanh": (0.40, 0.60), "Tanh N": (0.65, 0.95)}


def _row(claim, source, paper, fastff, test, agrees):
    return dict(claim=claim, source=source, paper=paper, fastff=fastff, test=test,
                agrees=agrees)


def _p(pairs, dataset, a, b):
    for p in pairs:
        if p["dataset"] == dataset and {p["model_a"], p["model_b"]} == {a, b}:
            return p["p_value"]
    return ""


def _errors(table, dataset):
    return {t["model"]: t["test_error"] for t in table
            if t["dataset"] == dataset and t["test_error"] != ""}


def _compare(table, pairs, dataset, better, worse, claim, expect_difference=True):
    """A Table 1 comparison: ``better`` below ``worse`` (significantly), or with
    ``expect_difference=False`` the two not told apart."""
    errors = _errors(table, dataset)
    paper = (f"{better} {PAPER_TABLE1[better][dataset]:.2f} vs {worse} "
             f"{PAPER_TABLE1[worse][dataset]:.2f}")
    source = "Table 1"
    if better not in errors or worse not in errors:
        return _row(claim, source, paper, "", "", "n/a: the runs are missing")
    p = _p(pairs, dataset, better, worse)
    measured = (f"{better} {errors[better]:.2f} vs {worse} {errors[worse]:.2f}"
                + (f", p = {p:.2g}" if p != "" else ""))
    if p == "":
        return _row(claim, source, paper, measured, "", "n/a: no test for the pair")
    if expect_difference:
        ok = errors[better] < errors[worse] and p < SIGNIFICANCE_LEVEL
        test = f"{better} lower, p < {SIGNIFICANCE_LEVEL}"
    else:
        ok = p >= SIGNIFICANCE_LEVEL
        test = f"no difference at p < {SIGNIFICANCE_LEVEL}"
    return _row(claim, source, paper, measured, test, "yes" if ok else "no")


def _saturation_updates(run):
    """The update at which each hidden layer's 98th percentile of abs(h) first reaches
    :data:`SATURATED` (None: never), and the final percentiles."""
    u, p98 = run.stats.updates, run.stats.scalar("act_p98")
    first = []
    for k in range(p98.shape[1]):
        hit = np.nonzero(p98[:, k] >= SATURATED)[0]
        first.append(int(u[hit[0]]) if len(hit) else None)
    return first, p98[-1]


def _layer_spread(run):
    """The mean over snapshots (after initialization) of the range of the layers' 98th
    percentiles: small when the layers move together."""
    p98 = run.stats.scalar("act_p98")[1:]
    return float(np.mean(p98.max(axis=1) - p98.min(axis=1))) if len(p98) else float("nan")


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
    """The per-layer claims (Figs. 2-4 and 10) from Shapeset's chosen runs
    ``{model name: RunData}``."""
    tanh, soft, tanh_n = runs.get("Tanh"), runs.get("Softsign"), runs.get("Tanh N")
    return [_fig2(runs.get("Sigmoid depth 4")), _fig3(tanh),
            _together(soft, tanh, "Softsign", "Fig. 3 bottom",
                      "less saturation, and all layers move together"),
            _together(tanh_n, tanh, "Tanh N", "Fig. 10",
                      "looks like softsign: no layer-by-layer saturation"),
            _fig4(tanh, soft), _jacobian(runs)]


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
    return _row(claim, source, paper, text, test, "yes" if ok else "no")


def _fig3(tanh):
    claim = "Tanh (standard init): the layers saturate one after another, from the first"
    source, paper = "Fig. 3 top", "layer 1 saturates first, then 2, ..."
    test = (f"the update at which each layer's 98th percentile of abs(h) reaches {SATURATED}: "
            "layer 1 first, no layer before the one below it")
    if tanh is None:
        return _row(claim, source, paper, "", test, "n/a: the run is missing")
    first, final = _saturation_updates(tanh)
    text = _when(first) + "; final 98th percentiles " + ", ".join(f"{v:.3f}" for v in final)
    return _row(claim, source, paper, text, test, "yes" if _sequential(first) else "no")


def _together(run, tanh, name, source, paper):
    claim = f"{name}: the layers move together, without tanh's layer-by-layer saturation"
    test = ("no layer's 98th percentile reaches "
            f"{SATURATED} before the layer above it does, and the layers' percentiles lie "
            "closer together than standard tanh's (the mean over snapshots of their range)")
    if run is None or tanh is None:
        return _row(claim, source, paper, "", test, "n/a: the runs are missing")
    first, _ = _saturation_updates(run)
    spread, spread_tanh = _layer_spread(run), _layer_spread(tanh)
    staircase = _sequential(first) and sum(t is not None for t in first) >= 2
    text = f"{_when(first)}; layers' range {spread:.3f} (Tanh {spread_tanh:.3f})"
    return _row(claim, source, paper, text, test,
                "yes" if not staircase and spread < spread_tanh else "no")


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
    return _row(claim, source, paper, text, test, "yes" if ok else "no")


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
    return _row(claim, source, "0.5 and 0.8", text, test, "yes" if ok else "no")


def table_claims(table, pairs):
    """Table 1's claims on every dataset the table has."""
    out = []
    for d in dict.fromkeys(t["dataset"] for t in table):
        title = DATASET_TITLES[d]
        if not _errors(table, d):
            continue
        if d in ("shapeset", "mnist"):
            out.append(_compare(table, pairs, d, "Tanh N", "Tanh",
                                f"{title}: normalized init beats standard init for tanh"))
            out.append(_compare(table, pairs, d, "Softsign N", "Softsign",
                                f"{title}: softsign is robust to the initialization",
                                expect_difference=False))
        errors = _errors(table, d)
        five = {m: e for m, e in errors.items() if m in PAPER_TABLE1}
        claim = f"{title}: the 5-layer sigmoid net is the worst of Table 1's models"
        paper = f"Sigmoid {PAPER_TABLE1['Sigmoid'][d]:.2f}, the highest"
        if "Sigmoid" not in five or len(five) < 2:
            out.append(_row(claim, "Table 1", paper, "", "", "n/a: runs missing"))
            continue
        worst_other = max((e, m) for m, e in five.items() if m != "Sigmoid")
        p = _p(pairs, d, "Sigmoid", worst_other[1])
        text = (f"Sigmoid {five['Sigmoid']:.2f}; next worst {worst_other[1]} {worst_other[0]:.2f}"
                + (f", p = {p:.2g}" if p != "" else ""))
        ok = five["Sigmoid"] > worst_other[0] and p != "" and p < SIGNIFICANCE_LEVEL
        out.append(_row(claim, "Table 1", paper, text,
                        f"Sigmoid highest, p < {SIGNIFICANCE_LEVEL} against the next",
                        "yes" if ok else "no"))
    return out


def markdown(rows):
    """The claims table as markdown."""
    lines = ["| the paper's claim | source | the paper | fastff | agrees |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['claim']} | {r['source']} | {r['paper']} | {r['fastff']} | "
                     f"{r['agrees']} |")
    lines += ["", "How each is judged:", ""]
    lines += [f"- {r['claim']}: {r['test']}." for r in rows if r["test"]]
    return "\n".join(lines) + "\n"
