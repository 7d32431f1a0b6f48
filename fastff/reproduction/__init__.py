"""``fastff reproduce glorot2010``: the paper's comparison from fastff's own runs.

One call plans every run of Table 1 (six models x datasets x learning rates x seeds), trains them
as one sweep on Dask (a LocalCluster of worker processes, or any cluster), chooses each model's
learning rate on validation error, and writes ``OUT/table1.csv``, ``OUT/table1.md``, the figures
and ``OUT/index.html``; the runs themselves are ordinary run directories under ``OUT/runs/`` with
``OUT/runs/runs.csv``. Run again, finished runs are skipped and unfinished ones resumed.

>>> fastff.reproduce("glorot2010", budget="smoke", out_dir="repro")   # doctest: +SKIP
"""
from pathlib import Path

from ..checks import choose, positive
from ..flags import Flag
from ..sweeps import SCHEDULER_FLAG, WORKERS_FLAG
from . import glorot2010
from .glorot2010 import BUDGETS, DATASETS, EXPERIMENTS
from .chosen import chosen_runs
from .plan import check_folders, check_names, check_rounds, open_folder, table_runs
from .publish import publish_folder
from .results import Reproduction, write_results
from .svm import svm_baseline

PAPERS = {glorot2010.PAPER: glorot2010}

# The keywords of reproduce() as the ``fastff reproduce`` command's flags (fastff.flags)
REPRODUCE_FLAGS = (
    Flag("budget", "smoke: narrow nets, a minute or two; quick: the paper's nets, about an hour "
         "on 2 cores (Shapeset, MNIST); long: 200,000 Shapeset and 60,000 MNIST updates with "
         "seeds, about 10 hours on 2 cores; paper: 5 million updates per run", default="quick",
         cli=dict(choices=list(BUDGETS))),
    Flag("out_dir", "output directory", flag="--out", default="reproduction",
         cli=dict(metavar="OUT")),
    Flag("datasets", "comma-separated; those not available offline are skipped with a note",
         default=",".join(DATASETS)),
    Flag("seeds", "runs per model, learning rate and dataset (default: the budget's)",
         cli=dict(type=int)),
    SCHEDULER_FLAG, WORKERS_FLAG,
    Flag("data_dir", "directory holding dataset files"),
    Flag("progress", "no progress lines", flag="--quiet", invert=True),
    Flag("experiments", "comma-separated, some of table1, pretrain (the denoising auto-encoder "
         "reference), cost (the quadratic cost), svm (the RBF SVM on a finite Shapeset), "
         "second_order (per-parameter rates from a diagonal Hessian or a gradient-variance "
         "estimate), or all", default="table1"),
    Flag("train", "train nothing: the tables, figures and claims of the runs already finished "
         "in --out (an interrupted reproduction's results so far)", flag="--no-train",
         invert=True),
    Flag("device", "cuda: one Dask worker per GPU, each training packs of runs in lockstep "
         "(fastff.train_many)", default="cpu", cli=dict(choices=["cpu", "cuda"])),
    Flag("widen", "rounds of widening: a model whose chosen learning rate sits at its grid's "
         "edge gets a run one rung beyond (default: the budget's; 0: none)",
         cli=dict(type=int)),
    Flag("publish", "copy the results and the runs' records, without checkpoints, to the new "
         "folder DIR: what a reader needs to recompute every number", cli=dict(metavar="DIR")),
)


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
        run with seeds, about 10 hours on 2 cores: the paper's central comparisons) or ``paper``
        (5 million updates per run: a cluster or a GPU). Except at ``smoke``, the runs left,
        their updates, the step time measured here and the hours they imply are printed first.
        :data:`fastff.reproduction.glorot2010.BUDGETS` lists the updates and grids.
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
    names = check_names("dataset", datasets if datasets is not None else list(DATASETS), DATASETS)
    chosen_experiments = check_names("experiment", experiments, EXPERIMENTS, everything=True)
    seeds = plan_budget.seeds if seeds is None else positive("seeds", seeds, integer=True)
    widen = plan_budget.widen if widen is None else check_rounds(widen)
    out = check_folders(Path(out_dir), train, publish)
    n_test, skipped, shapes = open_folder(out, dict(paper=paper, budget=plan_budget.name,
                                              datasets=names, seeds=seeds), plan_budget, data_dir)
    run_sets = [d for d in names if d not in skipped]
    rows = (table_runs(spec, plan_budget, out, run_sets, skipped, seeds, chosen_experiments,
                        data_dir=data_dir, device=device, train=train, progress=progress,
                        shapes=shapes, workers=workers, scheduler=scheduler, widen=widen)
            if run_sets else [])
    svm = (svm_baseline(out, plan_budget, progress=progress, fit=train)
           if "svm" in chosen_experiments and "shapeset" in run_sets else None)
    result = write_results(spec, plan_budget, out, rows, names, n_test, skipped, chosen_experiments,
                      svm, progress)
    if publish is not None:
        publish_folder(out, publish, progress)
    return result


__all__ = ["reproduce", "Reproduction", "chosen_runs", "glorot2010"]
