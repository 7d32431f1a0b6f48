"""The training loop of the paper: plain minibatch SGD, periodic evaluation, a run record."""
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import data as datasets
from .arch import parse_sizes
from .checks import positive
from .errors import DivergenceError, InputError
from .model import MLP
from .monitor import Monitor, Stats
from .record import RunDir, versions


@dataclass
class Run:
    """The result of :func:`train`.

    Attributes
    ----------
    model : MLP
        The trained network.
    history : list of dict
        One dict per evaluation: ``update``, ``examples``, ``train_loss`` (mean over the updates
        since the previous evaluation), ``valid_error``, ``test_error``, ``seconds`` and
        ``monitor_seconds`` (time spent measuring so far) and the per-step kernel statistics of
        every hidden layer since the previous evaluation: ``L{k}_sat_low``, ``L{k}_sat_high``,
        ``L{k}_mean``, ``L{k}_std``, ``L{k}_dead``, ``L{k}_delta_std`` (k = 1 is the first
        hidden layer).
    stats : fastff.monitor.Stats
        The monitor's snapshots on the fixed monitor set (empty when monitoring is off).
    dir : pathlib.Path or None
        The run directory, when ``out_dir`` was given.
    config : dict
    """

    model: MLP
    history: list = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    dir: Path = None
    config: dict = field(default_factory=dict)

    @property
    def final(self):
        """The last evaluation."""
        return self.history[-1] if self.history else None


def _evaluate(model, dataset):
    return model.error(*dataset.valid), model.error(*dataset.test)


def _layer_columns(summaries):
    row = {}
    for k, s in enumerate(summaries, start=1):
        for key in ("sat_low", "sat_high", "mean", "std", "dead", "delta_std"):
            row[f"L{k}_{key}"] = s[key]
    return row


def train(arch="1000x5", *, dataset="shapeset", activation="tanh", init="normalized", lr=0.01,
          batch_size=10, updates=20_000, device="cpu", seed=0, eval_every=None, out_dir=None,
          progress=True, resume=False, dtype="float32", data_options=None, data_dir=None,
          monitor_every=None, jacobian_every=None):
    """Train an MLP with plain SGD as in Glorot & Bengio (2010) and record the run.

    Parameters
    ----------
    arch : str or list of int
        Hidden layers (``"1000x5"``) or full sizes (``"1024-1000x5-9"``); input and output
        sizes come from the dataset.
    dataset : str or Dataset
        ``shapeset`` (online, the default), ``mnist`` or ``cifar10``, or a Dataset object.
    activation, init : str
        Hidden nonlinearity and weight initialization (see :mod:`fastff.activations`,
        :mod:`fastff.init`).
    lr : float
        Learning rate; the paper tunes it per network (reference section 1).
    batch_size : int
        10 in the paper.
    updates : int
        Number of SGD updates (minibatches).
    device : str
        ``cpu`` or ``cuda``.
    seed : int
        Fixes weights and data order: the same seed gives the same numbers on the CPU.
    eval_every : int, optional
        Updates between evaluations (default: updates / 10). Update 0 is always evaluated.
    out_dir : str, optional
        Run directory (config.json, metrics.csv, checkpoint.npz).
    progress : bool
        Show a progress bar.
    resume : bool
        Continue the run in ``out_dir`` from its checkpoint; the result equals an uninterrupted
        run's.
    dtype : str
        ``float32`` or ``float64``.
    data_options : dict, optional
        Passed to :func:`fastff.data.load` (e.g. ``{"valid_size": 2000}`` for Shapeset).
    data_dir : str, optional
        Where to look for dataset files first (see :func:`fastff.data.load`).
    monitor_every : int, optional
        Updates between measurements of the paper's statistics on the fixed monitor set (the
        first 300 test examples; :mod:`fastff.monitor`). Update 0 and the last update are
        always measured. Default: updates / 10, which keeps monitoring under 5% of the training
        time of the paper's net at batch 10 on the CPU; 0 turns monitoring off.
    jacobian_every : int, optional
        Updates between layer-Jacobian decompositions, taken at monitor snapshots (the most
        expensive measurement; the last update is included). Default: at update 0 only, where
        the paper measures it.

    Returns
    -------
    Run

    Raises
    ------
    DivergenceError
        When the loss becomes NaN or inf; the last good checkpoint is kept.
    """
    positive("lr", lr)
    positive("updates", updates, integer=True)
    positive("batch_size", batch_size, integer=True)
    eval_every = max(1, updates // 10) if eval_every is None else positive("eval_every", eval_every, integer=True)
    if monitor_every is None:
        monitor_every = max(1, updates // 10)
    elif monitor_every != 0:
        positive("monitor_every", monitor_every, integer=True)
    if jacobian_every is not None:
        positive("jacobian_every", jacobian_every, integer=True)
    if resume and out_dir is None:
        raise InputError("resume=True needs out_dir, the run to continue")
    data = dataset if isinstance(dataset, datasets.Dataset) else datasets.load(
        dataset, seed=seed, data_dir=data_dir, **(data_options or {}))
    sizes = parse_sizes(arch, data.n_in, data.n_classes)
    model = MLP(sizes, activation=activation, init=init, device=device, seed=seed, dtype=dtype)
    config = dict(arch=sizes, dataset=data.name, activation=model.activation, init=init, lr=lr,
                  batch_size=batch_size, updates=updates, device=model.device, seed=seed,
                  eval_every=eval_every, monitor_every=monitor_every,
                  jacobian_every=jacobian_every, dtype=model.dtype.name,
                  data_options=data_options or {}, versions=versions())
    record = RunDir(out_dir) if out_dir is not None else None
    history, start = [], 0
    if resume:
        old = record.read_config()
        fixed = ("arch", "dataset", "activation", "init", "lr", "batch_size", "seed", "eval_every",
                 "monitor_every", "jacobian_every", "dtype", "data_options")
        diff = [k for k in fixed if old.get(k) != config[k]]
        if diff:
            raise InputError(f"cannot resume {out_dir}: {', '.join(diff)} differ from the saved run")
        state, start, history = record.load_checkpoint()
        model.load_state(state)
        monitor_stats = record.load_stats().until(start)
    if record is not None:
        record.write_config(config)

    monitor = Monitor.from_dataset(data) if monitor_every else None
    if monitor is not None and resume:
        monitor.stats = monitor_stats
    monitor_seconds = history[-1].get("monitor_seconds", 0.0) if history else 0.0

    def observe(update):
        nonlocal monitor_seconds
        if monitor is None or not (update % monitor_every == 0 or update == updates):
            return
        t = time.perf_counter()
        jac = update == 0 or bool(jacobian_every and (update % jacobian_every == 0 or update == updates))
        monitor(model, update=update, examples=update * batch_size, jacobian=jac)
        monitor_seconds += time.perf_counter() - t
        if record is not None:
            record.save_stats(monitor.stats)

    stats = model.new_stats()
    losses = []
    t0 = time.perf_counter()

    def log(update):
        valid_err, test_err = _evaluate(model, data)
        row = dict(update=update, examples=update * batch_size,
                   train_loss=float(np.mean(losses)) if losses else math.nan,
                   valid_error=valid_err, test_error=test_err,
                   seconds=round(time.perf_counter() - t0, 3),
                   monitor_seconds=round(monitor_seconds, 3))
        row.update(_layer_columns(stats.summary(model.sizes)))
        history.append(row)
        losses.clear()
        stats.reset()
        if record is not None:
            record.save_checkpoint(model, update, history)
            record.write_metrics(history, monitor.stats if monitor else None)
        return row

    if start == 0 and not history:
        observe(0)
        log(0)
    bar = _progress(progress, start, updates)
    for k in range(start, updates):
        x, y = data.train_batch(k, batch_size)
        loss = model._step(np.ascontiguousarray(x, dtype=model.dtype),
                           np.ascontiguousarray(y, dtype=np.int64), lr, stats)
        if not math.isfinite(loss):
            where = f"; last good checkpoint: {record.checkpoint_path}" if record else ""
            raise DivergenceError(f"loss became {loss} at update {k + 1} (lr={lr}){where}")
        losses.append(loss)
        observe(k + 1)
        if (k + 1) % eval_every == 0 or k + 1 == updates:
            row = log(k + 1)
            if bar is not None:
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", valid=f"{row['valid_error']:.3f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return Run(model=model, history=history, stats=monitor.stats if monitor else Stats(),
               dir=record.path if record else None, config=config)


def _progress(enabled, start, total):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=start, unit="upd", dynamic_ncols=True)
