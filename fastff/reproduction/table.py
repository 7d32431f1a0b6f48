"""Table 1 from the rows of a sweep: a learning rate chosen per model and dataset on validation
error, its test error over seeds, and which results differ significantly from the best.

The rule (the paper's §2.3, the details fastff's: docs/protocol.md): for each model and dataset, the learning rate whose runs end
with the lowest validation error at the horizon (the last evaluation), averaged over seeds. A
learning rate with a diverged run is never chosen (its validation error counts as infinite);
failed runs are left out and said in the note. **Ties** (equal mean validation error) go to the
smaller learning rate: of two rates that do equally well, the gentler one is the less likely to
have been lucky. The test error reported is the chosen rate's, mean and standard deviation over
its seeds (ddof=1).

A chosen rate at either end of its grid is said in the note: the best rate may lie beyond it.

Significance: within a dataset, each model's test error is compared with the best model's.
With two or more seeds per model and the same seeds on both sides, a paired t-test over seeds
(``scipy.stats.ttest_rel``): run ``i`` of one model and run ``i`` of the other share their data
(the reproduction gives every run one ``data_seed``, so one training stream and one test set)
and their initial draws (the standard and normalized inits scale the same uniform draws), so
pairing them removes what the seeds share. It measures the spread over training seeds, which
is what the paper's several runs express; the test set is one fixed sample for every model and
its sampling is not counted (McNemar's test below counts only that, for one seed). With
different seeds on the two sides, Welch's t-test on the seeds' test errors
(``scipy.stats.ttest_ind(equal_var=False)``). With one seed, both models are scored on the same
test set, so their outcomes are paired: McNemar's exact test (:func:`mcnemar_exact`) on the
examples one model gets right and the other wrong, from each run's ``test_outcomes.npz``.
Only where a run has no outcomes (recorded before they were kept, or the SVM baseline) does
Fisher's exact test on the two error counts stand in (``scipy.stats.fisher_exact``), which
treats the two evaluations as independent samples and is conservative for paired ones. A
result is **bold** when it does not differ from the best at the paper's level, p < 0.005
(Table 1's caption): fastff's reading of the caption "bold results differ significantly from
non-bold ones at p = 0.005" is that the paper bolds the best result and those it cannot tell
apart from it.
"""
import csv
import io
import math

import numpy as np

from ..errors import InputError
from ..files import atomic_write_bytes
from .glorot2010 import (CLAIMS, DATASET_TITLES, EXPERIMENT_MODELS, MODELS, PAPER_EXPERIMENTS,
                         PAPER_TABLE1, SIGNIFICANCE_LEVEL, model_of)

# The other experiments' table (experiments.csv): each result beside the model the paper
# compares it with.
EXPERIMENT_COLUMNS = ("experiment", "dataset", "model", "lr", "seeds", "valid_error",
                      "test_error", "test_error_std", "paper_test_error", "compared_with",
                      "compared_test_error", "p_value", "test", "measured", "claim", "note")
COLUMNS = ("dataset", "model", "depth", "activation", "init", "lr", "seeds", "valid_error",
           "test_error", "test_error_std", "paper_test_error", "updates", "p_vs_best", "bold",
           "test", "note")


def _number(value):
    """A finite float from a runs.csv value, else None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _pct(fraction):
    """A fraction as percent, rounded past what a test set of a million could resolve."""
    return round(100 * float(fraction), 4)


def _scores(runs):
    """(runs by lr, mean validation error of each rate whose runs finished, the rates settled
    (scored or diverged), notes on the rest). A rate is scored on the seeds every rate of the
    grid has run: the chosen rate's extra seeds (:func:`~fastff.reproduction.glorot2010.seeded`)
    do not weigh in its choice."""
    by_lr = {}
    for r in runs:
        by_lr.setdefault(float(r["lr"]), []).append(r)
    common = set.intersection(*({int(r["seed"]) for r in g} for g in by_lr.values())) \
        if by_lr else set()
    scores, settled, notes = {}, [], []
    for lr, group in sorted(by_lr.items()):
        group = [r for r in group if int(r["seed"]) in common]
        statuses = [r["status"] for r in group]
        if "diverged" in statuses:
            notes.append(f"lr {lr:g} diverged")
            settled.append(lr)
            continue
        done = [r for r in group if r["status"] == "done" and _number(r["valid_error"]) is not None]
        if len(done) < len(group):
            notes.append(f"lr {lr:g}: {len(group) - len(done)} of {len(group)} runs "
                         f"{'failed' if 'failed' in statuses else 'unfinished'}")
        if done:
            scores[lr] = float(np.mean([_number(r["valid_error"]) for r in done]))
            settled.append(lr)
    return by_lr, scores, settled, notes


def _best(scores):
    """The rate of lowest mean validation error; ties to the smaller learning rate."""
    return min(scores, key=lambda k: (scores[k], k))


def _tie(scores):
    """Whether several rates scored and all the same (a model at chance everywhere)."""
    return len(scores) > 1 and len(set(scores.values())) == 1


def _edge(settled, scores):
    """Where the chosen rate sits among the settled rates (an unfinished rung is no edge's
    evidence either way: until it has finished, the rate beside it is still the edge)."""
    if len(settled) < 2 or not scores or _tie(scores):
        return None
    lr = _best(scores)
    return "smallest" if lr == min(settled) else "largest" if lr == max(settled) else None


def grid_edge(runs):
    """``smallest`` or ``largest``: the end of its grid where the rate chosen among one model's
    runs sits (:func:`choose_lr`); None inside the grid, for a grid of one rate, and where every
    rate scores the same (no direction to look in)."""
    _, scores, settled, _ = _scores(runs)
    return _edge(settled, scores)


def choose_lr(runs):
    """The learning rate chosen on validation error among one model's runs on one dataset.

    Parameters
    ----------
    runs : list of dict
        Rows of runs.csv: ``lr``, ``seed``, ``status``, ``valid_error``, ``test_error``.

    Returns
    -------
    (lr, chosen, note)
        ``lr`` is None when no learning rate has a finished run; ``chosen`` the chosen rate's
        finished runs, every seed; ``note`` what was left out (diverged or failed runs), or "".
    """
    by_lr, scores, settled, notes = _scores(runs)
    if not scores:
        return None, [], "; ".join(notes) or "no runs"
    lr = _best(scores)
    chosen = [r for r in by_lr[lr] if r["status"] == "done" and _number(r["valid_error"]) is not None]
    if len(chosen) < len(by_lr[lr]):
        left = [f"{r['seed']} ({r['status'] or 'unfinished'})" for r in by_lr[lr] if r not in chosen]
        notes.append(f"lr {lr:g}: seed{'s' * (len(left) > 1)} {', '.join(left)} left out")
    edge = _edge(settled, scores)
    if edge:
        notes.append(f"lr {lr:g} is the {edge} of the grid: the best rate may lie beyond it")
    elif _tie(scores):
        notes.append(f"every rate gives the same validation error ({_pct(scores[lr]):g}%)")
    return lr, chosen, "; ".join(notes)


def _result(runs):
    """(lr, chosen runs, their test errors, row fields) of one model's runs: its chosen
    learning rate's (fields: note, and lr, seeds and the errors in percent when one was
    chosen)."""
    lr, chosen, note = choose_lr(runs)
    if lr is None:
        return None, [], [], dict(note=note)
    test = {int(r["seed"]): _number(r["test_error"]) for r in chosen}
    return lr, chosen, test, dict(
        lr=lr, seeds=len(chosen), note=note,
        valid_error=_pct(np.mean([_number(r["valid_error"]) for r in chosen])),
        test_error=_pct(np.mean(list(test.values()))),
        test_error_std=_pct(np.std(list(test.values()), ddof=1)) if len(test) > 1 else "")


def mcnemar_exact(correct_a, correct_b):
    """Two-sided p-value of McNemar's exact test: two classifiers' outcomes (True = right) on
    the same examples. Only the discordant examples count: under the null hypothesis each of
    the n examples one gets right and the other wrong is equally likely to be either's, so
    the smaller count is Binomial(n, 1/2)."""
    from scipy import stats
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise InputError(f"paired outcomes must be of one test set: shapes {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)


def _p_value(errors, best_errors, n_test, outcomes=None, best_outcomes=None):
    """Two-sided p-value of a difference in test error from the best model's, and the test's
    name. ``errors``: {seed: test error (a fraction)} of each model's chosen runs;
    ``outcomes``: the one-seed runs' paired test outcomes, where recorded."""
    from scipy import stats
    if len(errors) >= 2 and len(best_errors) >= 2:
        if set(errors) == set(best_errors):  # the same seeds: paired run by run
            diff = np.array([errors[s] - best_errors[s] for s in sorted(errors)])
            if np.ptp(diff) < 1e-12:  # a constant difference (to rounding): no spread
                return (1.0 if abs(diff[0]) < 1e-12 else 0.0), "paired-t"
            return float(stats.ttest_rel([errors[s] for s in sorted(errors)],
                                         [best_errors[s] for s in sorted(errors)]).pvalue), "paired-t"
        a, b = list(errors.values()), list(best_errors.values())
        if np.ptp(a) == 0 and np.ptp(b) == 0:
            return (1.0 if a[0] == b[0] else 0.0), "welch-t"
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue), "welch-t"
    if (outcomes is not None and best_outcomes is not None
            and len(outcomes) == len(best_outcomes)):
        return mcnemar_exact(outcomes, best_outcomes), "mcnemar-exact"
    if n_test:  # one run against one (or a baseline), without outcomes: the mean errors
        wrong = round(float(np.mean(list(errors.values()))) * n_test)
        wrong_best = round(float(np.mean(list(best_errors.values()))) * n_test)
        table = [[wrong, n_test - wrong], [wrong_best, n_test - wrong_best]]
        return float(stats.fisher_exact(table).pvalue), "fisher-exact"
    return None, ""


def table1(rows, datasets, n_test, skipped=None, level=SIGNIFICANCE_LEVEL, outcomes=None):
    """Table 1 from runs.csv rows.

    Parameters
    ----------
    rows : list of dict
        The sweep's rows (train() arguments and results; errors as fractions).
    datasets : list of str
        Datasets in table order.
    n_test : dict
        Test-set size per dataset (for the one-seed test).
    skipped : dict, optional
        Dataset -> why it was not run; its rows carry the note and no numbers.
    level : float
        Significance level of the bolding.
    outcomes : callable, optional
        row -> the run's test outcomes (a boolean per test example) or None: the paired data
        of the one-seed comparisons.

    Returns
    -------
    list of dict
        One row per model and dataset with :data:`COLUMNS`; errors in percent.
    """
    skipped = skipped or {}
    out = []
    for dataset in datasets:
        block = []
        for model in MODELS:
            row = dict.fromkeys(COLUMNS, "")
            row.update(dataset=dataset, model=model.name, depth=model.depth,
                       activation=model.activation, init=model.init,
                       paper_test_error=PAPER_TABLE1.get(model.name, {}).get(dataset, ""))
            if dataset in skipped:
                row["note"] = f"skipped: {skipped[dataset]}"
                out.append(row)
                continue
            runs = [r for r in rows if r["dataset"] == dataset and model_of(r) == model]
            lr, chosen, test, fields = _result(runs)
            row.update(fields)
            if lr is not None:
                row.update(updates=int(chosen[0]["updates_done"]), _test=test,
                           _outcomes=_paired(chosen, outcomes))
            block.append(row)
            out.append(row)
        _bold(block, n_test.get(dataset), level)
    for row in out:
        row.pop("_test", None)
        row.pop("_outcomes", None)
    return out


def comparison(rows, dataset, model_a, model_b, outcomes=None, level=SIGNIFICANCE_LEVEL):
    """Model ``a`` against model ``b`` on one dataset, each at its chosen learning rate: the
    difference in test error and what the claims test it with (:mod:`.significance`).

    Returns
    -------
    dict or None
        ``diff`` (a minus b, in points), ``low`` and ``high`` (its two-sided ``1 - level``
        interval), ``eq_low`` and ``eq_high`` (its ``1 - 2 level`` interval: two one-sided tests
        at ``level`` for an equivalence), ``p`` (the test the verdict rests on), ``test`` (its
        name), ``p_pooled`` (over seeds, the matched-pairs Cochran-Mantel-Haenszel test; with
        one seed McNemar's), ``seeds``; None when either model has no chosen run or the two
        share no seed.
    """
    from .significance import matched_pooled, paired_interval, seed_interval
    found = []
    for name in (model_a, model_b):
        runs = [r for r in rows if r["dataset"] == dataset and model_of(r) is not None
                and model_of(r).name == name]
        _, chosen, test, _ = _result(runs)
        kept = {int(r["seed"]): outcomes(r) for r in chosen} if outcomes is not None else {}
        found.append((test, {s: o for s, o in kept.items() if o is not None}))
    (test_a, out_a), (test_b, out_b) = found
    seeds = sorted(set(test_a) & set(test_b))
    if not seeds or any(test_a[s] is None or test_b[s] is None for s in seeds):
        return None
    paired = all(s in out_a and s in out_b for s in seeds)
    p_pooled = matched_pooled({s: out_a[s] for s in seeds},
                              {s: out_b[s] for s in seeds})[0] if paired else None
    if len(seeds) >= 2:
        ea, eb = {s: test_a[s] for s in seeds}, {s: test_b[s] for s in seeds}
        diff, low, high, p = seed_interval(ea, eb, level)
        _, eq_low, eq_high, _ = seed_interval(ea, eb, 2 * level)
        test = f"paired t over {len(seeds)} seeds"
    elif paired:
        diff, low, high = paired_interval(out_a[seeds[0]], out_b[seeds[0]], level)
        _, eq_low, eq_high = paired_interval(out_a[seeds[0]], out_b[seeds[0]], 2 * level)
        p, test = p_pooled, "McNemar, one seed"
    else:
        return None
    pct = lambda v: round(100 * v, 4)  # noqa: E731
    return dict(diff=pct(diff), low=pct(low), high=pct(high), eq_low=pct(eq_low),
                eq_high=pct(eq_high), p=p, test=test, p_pooled=p_pooled, seeds=len(seeds))


def _paired(chosen, outcomes):
    """The test outcomes of a one-seed result's run (None with several seeds or none kept)."""
    return outcomes(chosen[0]) if outcomes is not None and len(chosen) == 1 else None


def _bold(block, n_test, level):
    """Mark the best model's row and the rows not significantly different from it."""
    scored = [r for r in block if r.get("_test")]
    if not scored:
        return
    best = min(scored, key=lambda r: r["test_error"])
    for r in scored:
        if r is best:
            r.update(p_vs_best="", bold=True, test="best")
            continue
        p, test = _p_value(r["_test"], best["_test"], n_test, r.get("_outcomes"),
                           best.get("_outcomes"))
        r.update(p_vs_best=float(f"{p:.4g}") if p is not None else "", test=test,
                 bold=bool(p is not None and p >= level))


PAIR_COLUMNS = ("dataset", "model_a", "model_b", "test_error_a", "test_error_b", "p_value",
                "test", "bold_a", "bold_b", "differ")


def pairwise(rows, table, n_test, outcomes=None, level=SIGNIFICANCE_LEVEL):
    """Every pair of Table 1's results within a dataset, with the p-value of their difference.

    ``differ`` says, for a bold result against a non-bold one, whether they differ at
    ``level``: the paper's caption says they all do ("bold results differ significantly from
    non-bold ones at p = 0.005"), which fastff's rule (bold: not different from the best)
    does not guarantee, so the pairs show where the caption's wording holds.

    Parameters
    ----------
    rows, n_test, outcomes
        As :func:`table1`'s (``n_test`` per dataset).
    table : list of dict
        :func:`table1`'s rows (for the errors and the bold marks).

    Returns
    -------
    list of dict
        Rows with :data:`PAIR_COLUMNS`; errors in percent.
    """
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in table):
        scored = []
        for t in table:
            if t["dataset"] != dataset or t["test_error"] == "":
                continue
            runs = [r for r in rows if r["dataset"] == dataset and model_of(r) is not None
                    and model_of(r).name == t["model"]]
            _, chosen, test, _ = _result(runs)
            scored.append((t, test, _paired(chosen, outcomes)))
        for i, (a, test_a, out_a) in enumerate(scored):
            for b, test_b, out_b in scored[i + 1:]:
                p, kind = _p_value(test_a, test_b, n_test.get(dataset), out_a, out_b)
                differ = ""
                if bool(a["bold"]) != bool(b["bold"]) and p is not None:
                    differ = "yes" if p < level else "no"
                out.append(dict(dataset=dataset, model_a=a["model"], model_b=b["model"],
                                test_error_a=a["test_error"], test_error_b=b["test_error"],
                                p_value=float(f"{p:.4g}") if p is not None else "", test=kind,
                                bold_a=bool(a["bold"]), bold_b=bool(b["bold"]), differ=differ))
    return out


def _fmt(value, digits=2):
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def csv_bytes(columns, rows):
    """CSV text (bytes) of dict rows under ``columns``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def write_table(out_dir, table, budget, level=SIGNIFICANCE_LEVEL, pairs=None):
    """Write ``table1.csv``, ``table1.md`` and, with ``pairs`` (:func:`pairwise`),
    ``pairwise.csv`` into ``out_dir``; returns the markdown text."""
    atomic_write_bytes(out_dir / "table1.csv", csv_bytes(COLUMNS, table))
    md = markdown(table, budget, level)
    if pairs is not None:
        atomic_write_bytes(out_dir / "pairwise.csv", csv_bytes(PAIR_COLUMNS, pairs))
        md += pairwise_markdown(pairs, level)
    atomic_write_bytes(out_dir / "table1.md", md.encode())
    return md


def pairwise_markdown(pairs, level=SIGNIFICANCE_LEVEL):
    """The pairwise p-values per dataset, and whether the caption's wording holds on them."""
    lines = []
    for dataset in dict.fromkeys(p["dataset"] for p in pairs):
        block = [p for p in pairs if p["dataset"] == dataset]
        models = list(dict.fromkeys([p["model_a"] for p in block] + [p["model_b"] for p in block]))
        cell = {(p["model_a"], p["model_b"]): p for p in block}
        cell.update({(p["model_b"], p["model_a"]): p for p in block})
        lines += ["", f"{DATASET_TITLES[dataset]}: p-values of every pair of results.", "",
                  "| | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
        for a in models:
            row = [f"{cell[(a, b)]['p_value']:.2g}" if (a, b) in cell
                   and cell[(a, b)]["p_value"] != "" else "" for b in models]
            lines.append(f"| {a} | " + " | ".join(row) + " |")
        mixed = [p for p in block if p["differ"]]
        if mixed:
            failing = [p for p in mixed if p["differ"] == "no"]
            lines += ["", f"The caption's wording (\"bold results differ significantly from "
                      f"non-bold ones at p = {level}\") " + (
                          f"holds on all {len(mixed)} bold/non-bold pairs." if not failing else
                          f"fails on {len(failing)} of {len(mixed)} bold/non-bold pairs: "
                          + "; ".join(f"{p['model_a']} vs {p['model_b']} (p = {p['p_value']:.2g})"
                                      for p in failing)
                          + ". Bold here means \"not different from the best\", which does "
                          "not make every bold result differ from every other.")]
    return "\n".join(lines) + ("\n" if lines else "")


def markdown(table, budget, level=SIGNIFICANCE_LEVEL):
    """Table 1 as markdown: one column per dataset, fastff's test error beside the paper's."""
    datasets = list(dict.fromkeys(r["dataset"] for r in table))
    cells = {(r["dataset"], r["model"]): r for r in table}
    head = "| model | " + " | ".join(f"{DATASET_TITLES[d]} (paper)" for d in datasets) + " |"
    lines = [f"Test error (%) at the learning rate chosen on validation error; budget "
             f"`{budget.name}`: {budget.about}. **Bold**: not significantly different from the "
             f"best of its column (p >= {level}); ± is the std over seeds; lr in brackets.", "",
             head, "|---|" + "---:|" * len(datasets)]
    for model in MODELS:
        row = [model.name]
        for d in datasets:
            r = cells[(d, model.name)]
            paper = f" ({_fmt(r['paper_test_error'])})" if r["paper_test_error"] != "" else " (-)"
            if r["test_error"] == "":
                row.append("n/a" + paper)
                continue
            value = _fmt(r["test_error"]) + (f" ± {_fmt(r['test_error_std'])}"
                                            if r["test_error_std"] != "" else "")
            row.append((f"**{value}**" if r["bold"] else value) + f" [{r['lr']:g}]" + paper)
        lines.append("| " + " | ".join(row) + " |")
    notes = sorted({f"{DATASET_TITLES[r['dataset']]}, {r['model']}: {r['note']}"
                    for r in table if r["note"] and not r["note"].startswith("skipped")})
    skipped = sorted({f"{DATASET_TITLES[r['dataset']]}: {r['note']}" for r in table
                      if r["note"].startswith("skipped")})
    tests = sorted({r["test"] for r in table if r["test"] not in ("", "best")})
    if tests:
        lines += ["", "Significance test: " + ", ".join(
            {"welch-t": "Welch's t-test over seeds", "paired-t": "a paired t-test over "
             "seeds (run i of one model against run i of the other: the same data seed, test "
             "set and initial draws)", "mcnemar-exact":
             "McNemar's exact test on the two runs' paired test-set outcomes (one seed)",
             "fisher-exact": "Fisher's exact test on the test-set error counts (one seed, "
             "runs without recorded outcomes)"}[t] for t in tests) + "."]
    lines += [""] + [f"- {n}" for n in skipped + notes]
    return "\n".join(lines).rstrip() + "\n"


def experiments_table(rows, table, n_test, svm=None, measured=None, outcomes=None):
    """The paper's other experiments (Shapeset), each beside the model it is compared with.

    Parameters
    ----------
    rows : list of dict
        The sweep's rows.
    table : list of dict
        Table 1 (:func:`table1`), for the compared models.
    n_test : int
        The Shapeset test set's size (for the one-seed test).
    svm : dict, optional
        :meth:`fastff.baselines.SVMResult.to_dict` of the baseline, when it ran.
    measured : dict, optional
        Model name -> a measurement the claim is about (text), e.g. the top layer's mean.
    outcomes : callable, optional
        As :func:`table1`'s.

    Returns
    -------
    list of dict
        Rows with :data:`EXPERIMENT_COLUMNS`; errors in percent. Experiments without runs are
        left out.
    """
    measured = measured or {}
    out, tests = [], {}
    for r in table:  # the compared Table 1 models
        if r["dataset"] == "shapeset" and r["test_error"] != "":
            runs = [x for x in rows if x["dataset"] == "shapeset"
                    and model_of(x) is not None and model_of(x).name == r["model"]]
            _, chosen, test, _ = _result(runs)
            tests[r["model"]] = (r["test_error"], test, _paired(chosen, outcomes))
    if svm is not None:
        row = dict.fromkeys(EXPERIMENT_COLUMNS, "")
        row.update(experiment="svm", dataset="shapeset", model="RBF SVM", seeds=1,
                   valid_error=_pct(svm["valid_error"]), test_error=_pct(svm["test_error"]),
                   paper_test_error=PAPER_EXPERIMENTS["RBF SVM"],
                   note=(f"{svm['method']} ({svm['n_components']} Nystroem components, a "
                         "linear SVM on them)" if svm["method"] == "nystroem" else "exact SVC")
                   + f", {svm['n_train']:,} examples, C={svm['C']:g}, gamma={svm['gamma']:.4g} "
                   f"(chosen on validation error), {svm['seconds']:.0f} s"
                   + ("; the solver stopped before converging for "
                      + ", ".join(f"C={g['C']:g} gamma={g['gamma']:.4g}" for g in svm["grid"]
                                  if not g.get("converged", True))
                      if not all(g.get("converged", True) for g in svm["grid"]) else ""))
        tests["RBF SVM"] = (row["test_error"], {0: svm["test_error"]}, None)
        out.append(row)
    for model in EXPERIMENT_MODELS:
        runs = [r for r in rows if r["dataset"] == "shapeset" and model_of(r) == model]
        if not runs:
            continue
        row = dict.fromkeys(EXPERIMENT_COLUMNS, "")
        other, claim = CLAIMS[model.name]
        row.update(experiment=model.experiment, dataset="shapeset", model=model.name,
                   paper_test_error=PAPER_EXPERIMENTS.get(model.name, ""), compared_with=other,
                   claim=claim, measured=measured.get(model.name, ""))
        lr, chosen, test, fields = _result(runs)
        row.update(fields)
        if lr is not None and other in tests:
            row["compared_test_error"] = tests[other][0]
            p, kind = _p_value(test, tests[other][1], n_test, _paired(chosen, outcomes),
                               tests[other][2])
            row.update(p_value=float(f"{p:.4g}") if p is not None else "", test=kind)
        out.append(row)
    return out


def write_experiments(out_dir, rows):
    """Write ``experiments.csv`` and ``experiments.md``; returns the markdown text."""
    atomic_write_bytes(out_dir / "experiments.csv", csv_bytes(EXPERIMENT_COLUMNS, rows))
    lines = ["The paper's other experiments on Shapeset-3x2: test error (%) [chosen lr] "
             "(paper), beside the model the paper compares it with; p: the difference's "
             "two-sided p-value.", "",
             "| experiment | model | test error (paper) | compared with | p | measured | "
             "the paper's claim |", "|---|---|---:|---|---:|---|---|"]
    for r in rows:
        value = "n/a" if r["test_error"] == "" else _fmt(r["test_error"]) + (
            f" [{r['lr']:g}]" if r["lr"] != "" else "")
        paper = f" ({_fmt(r['paper_test_error'])})" if r["paper_test_error"] != "" else " (-)"
        other = (f"{r['compared_with']}: {_fmt(r['compared_test_error'])}"
                 if r["compared_test_error"] != "" else r["compared_with"])
        lines.append(f"| {r['experiment']} | {r['model']} | {value}{paper} | {other} | "
                     f"{format(r['p_value'], '.2g') if r['p_value'] != '' else ''} | {r['measured']} | "
                     f"{r['claim']} |")
    lines += [""] + [f"- {r['model']}: {r['note']}" for r in rows if r["note"]]
    md = "\n".join(lines).rstrip() + "\n"
    atomic_write_bytes(out_dir / "experiments.md", md.encode())
    return md
