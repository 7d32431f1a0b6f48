"""Everything a reproduction writes from its runs: Table 1 and the pairwise tests, the other
experiments' table, the figures, the claims and the page."""
import functools
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write_bytes
from .chosen import chosen_runs, test_outcomes
from .claims import write_claims
from .figures import draw_figures
from .glorot2010 import DATASET_TITLES
from .page import index_html
from .table import experiments_table, pairwise, table1, write_experiments, write_table


@dataclass
class Reproduction:
    """What :func:`reproduce` wrote.

    Attributes
    ----------
    out_dir : pathlib.Path
    table : list of dict
        The rows of ``table1.csv`` (errors in percent).
    runs : list of dict
        The rows of ``runs/runs.csv`` (errors as fractions).
    skipped : dict
        Dataset -> why it was not run.
    index : pathlib.Path
        ``index.html``.
    figures : list of (file name, caption)
    experiments : list of dict
        The rows of ``experiments.csv`` (the paper's other experiments; errors in percent).
    svm : dict or None
        The SVM baseline's result (:class:`fastff.baselines.SVMResult` as a dict).
    claims : list of dict
        The rows of ``claims.csv``: each of the paper's claims, fastff's number, whether they
        agree (:mod:`fastff.reproduction.claims`).
    """

    out_dir: Path
    table: list
    runs: list
    skipped: dict
    index: Path
    figures: list = field(default_factory=list)
    experiments: list = field(default_factory=list)
    svm: dict = None
    claims: list = field(default_factory=list)


def write_results(spec, budget, out, rows, names, n_test, skipped, experiments, svm, progress):
    """Everything written from the runs: the tables, the figures, the claims, the page."""
    outcomes = functools.partial(test_outcomes, out / "runs")
    table = table1(rows, names, n_test, skipped, outcomes=outcomes)
    pairs = pairwise(rows, table, n_test, outcomes)
    write_table(out, table, budget, pairs=pairs)
    if progress:
        for t in table:
            if "of the grid" in t["note"]:
                print(f"note: {DATASET_TITLES[t['dataset']]}, {t['model']}: {t['note']}")
    others = []
    if set(experiments) - {"table1"} and "shapeset" in n_test and "shapeset" not in skipped:
        others = experiments_table(rows, table, n_test["shapeset"], svm, outcomes=outcomes)
        for row, text in zip(others, measured(out, rows, table, others)):
            row["measured"] = text or row["measured"]
        write_experiments(out, others)
    figures = draw_figures(out, rows, table + others)
    claims = write_claims(out, rows, table) if "table1" in experiments else []
    index = out / "index.html"
    atomic_write_bytes(index, index_html(spec, budget, table, figures, skipped, others,
                                         claims).encode())
    return Reproduction(out_dir=out, table=table, runs=rows, skipped=skipped, index=index,
                        figures=figures, experiments=others, svm=svm, claims=claims)


def measured(out, rows, table, others):
    """What the claims are about, measured in the chosen runs, one text per row of ``others``
    (the experiments table; "" where there is nothing to measure): the top hidden layer's final
    activation mean (Fig. 2), where the pre-trained curve ends in Fig. 11, and normalized init's
    error beside the standard-init nets with per-parameter rates."""
    from ..report.runs import load_run
    runs = chosen_runs(rows, table + others, "shapeset")
    errors = {t["model"]: t["test_error"] for t in table
              if t["dataset"] == "shapeset" and t["test_error"] != ""}
    texts = []
    for row in others:
        text = ""
        if row["model"] == "Sigmoid depth 4 pre-trained" and row["test_error"] != "":
            tops = {}
            for name in ("Sigmoid depth 4", "Sigmoid depth 4 pre-trained"):
                stats = load_run(out / "runs" / runs[name]).stats if name in runs else ()
                if len(stats):
                    tops[name] = (float(stats.scalar("act_mean")[-1][-1]),
                                  float(stats.scalar("act_std")[-1][-1]))
            if len(tops) == 2:
                (m, sd), (m0, sd0) = tops["Sigmoid depth 4 pre-trained"], tops["Sigmoid depth 4"]
                text = (f"top layer's final mean activation {m:.3f} ± {sd:.3f} (not pre-trained: "
                        f"{m0:.3f} ± {sd0:.3f})")
        elif (row["experiment"] == "second_order" and row["compared_with"] == "Tanh"
              and "Tanh N" in errors):
            text = f"Tanh N: {errors['Tanh N']:.2f}"
        elif row["model"] == "Tanh pre-trained" and row["test_error"] != "" and errors:
            rank = 1 + sum(e < row["test_error"] for e in errors.values())
            text = (f"ends {'lowest' if rank == 1 else f'#{rank}'} of {len(errors) + 1} "
                    "Shapeset curves")
        texts.append(text)
    return texts
