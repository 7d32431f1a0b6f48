"""Exporting runs to other tools: TensorBoard event files.

``fastff export tensorboard RUN_DIR [RUN_DIR ...] [--out DIR]`` (or :func:`tensorboard`) turns
a run record into what TensorBoard's scalar, histogram and distribution views read:

* scalars, step = update: every series of ``metrics.csv`` as ``SOURCE/STATISTIC`` for the whole
  network (``train/loss``, ``eval/test_error``, ...) and ``SOURCE/LAYER/STATISTIC`` per hidden
  layer (``train/L3/sat_high``: the per-step kernel counts; ``monitor/L3/act_p98``: the fixed
  monitor set), and the fraction of each histogram's values outside its range
  (``monitor/L3/act_outside``);
* histograms, step = update: the monitor's ``act``, ``delta`` (dC/ds) and ``grad_w`` (dC/dW)
  histograms of every hidden layer, as ``act/L1`` etc. (their bins as recorded in stats.npz).

The events are written with tensorboardX (``pip install 'fastff[tensorboard]'``), into a
temporary folder renamed into place, so a log directory always holds one complete export.
"""
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import FastffError, InputError
from .record import RunDir


def _writer_class():
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise FastffError("TensorBoard export needs tensorboardX: "
                          "pip install 'fastff[tensorboard]'") from None
    return SummaryWriter


def _log_dirs(run_dirs, out):
    """Where each run's events go: RUN/tensorboard without ``out``, else OUT/RUN_NAME (names
    made unique), or OUT itself for a single run."""
    if out is None:
        return [Path(r) / "tensorboard" for r in run_dirs]
    out = Path(out)
    if len(run_dirs) == 1:
        return [out]
    names, dirs = set(), []
    for r in run_dirs:
        name, k = Path(r).resolve().name, 1
        while name in names:
            k += 1
            name = f"{Path(r).resolve().name}-{k}"
        names.add(name)
        dirs.append(out / name)
    return dirs


def write_run(run_dir, log_dir):
    """Write the events of one run directory into ``log_dir`` (replacing an earlier export)."""
    from .report.runs import load_run
    SummaryWriter = _writer_class()
    run = load_run(run_dir)
    log_dir = Path(log_dir)
    if log_dir.exists() and not log_dir.is_dir():
        raise InputError(f"{log_dir} exists and is not a directory")
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=log_dir.name + ".", suffix=".tmp", dir=log_dir.parent))
    try:
        writer = SummaryWriter(logdir=str(tmp), flush_secs=3600)
        for r in run.metrics:
            if not np.isfinite(r["value"]):  # not measured (NaN): TensorBoard shows no gap
                continue
            tag = (f"{r['source']}/{r['statistic']}" if r["layer"] == 0
                   else f"{r['source']}/L{r['layer']}/{r['statistic']}")
            writer.add_scalar(tag, r["value"], global_step=r["update"])
        for m in run.stats:
            for name, hists in m.hists.items():
                edges = np.asarray(m.edges[name], np.float64)
                centres = (edges[:-1] + edges[1:]) / 2
                for k, counts in enumerate(np.asarray(hists)):
                    num = int(counts.sum())
                    outside = m.outside.get(name)
                    if outside is not None and np.isfinite(outside[k]):
                        writer.add_scalar(f"monitor/L{k + 1}/{name}_outside",
                                          float(outside[k]), global_step=m.update)
                    if num == 0:
                        continue
                    writer.add_histogram_raw(
                        f"{name}/L{k + 1}", min=float(edges[0]), max=float(edges[-1]), num=num,
                        sum=float(counts @ centres), sum_squares=float(counts @ centres ** 2),
                        bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(),
                        global_step=m.update)
        writer.close()
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700
        if log_dir.exists():
            shutil.rmtree(log_dir)
        os.replace(tmp, log_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return log_dir


def tensorboard(run_dirs, out=None):
    """Export run directories as TensorBoard event files.

    Parameters
    ----------
    run_dirs : list of str or Path
        Run directories written by :func:`fastff.train`.
    out : str or Path, optional
        Log directory. Default: ``RUN_DIR/tensorboard`` for each run. With several runs, each
        goes into ``out/RUN_NAME`` (TensorBoard shows them as separate runs).

    Returns
    -------
    list of (run directory, log directory)
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise InputError("export needs at least one run directory")
    for r in run_dirs:
        RunDir(r).read_config()  # a clear error for a directory that is not a run
    return [(Path(r), write_run(r, d)) for r, d in zip(run_dirs, _log_dirs(run_dirs, out))]
