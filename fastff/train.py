"""The training loop of the paper: minibatch SGD (plain, or with the per-parameter rates of
:mod:`fastff.kernels.rates`), periodic evaluation, a run record."""
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba.core import event as numba_event

from . import config as fastff_config, data as datasets
from .arch import parse_sizes
from .checks import choose, positive, seed as check_seed
from .data.base import ArrayDataset
from .data.shapeset import Shapeset
from .data.sources import check_fits_memory
from .errors import DivergenceError, InputError, RecordError
from .kernels.rates import METHODS as rate_methods, check_hyper as check_rates
from .model import MLP
from .monitor import Monitor, Stats
from .pretrain import check_options as check_pretrain, pretrain_dae
from .record import RunDir, thread_counts, versions
from .warmup import CompileNotice, ParallelCompile, warm_up

# Keys of config.json that a resumed run must share with the saved one (``updates`` may grow;
# the cadences, when not given, are taken from the saved run).
RESUME_FIXED = ("arch", "dataset", "activation", "init", "lr", "batch_size", "seed", "eval_every",
                "monitor_every", "jacobian_every", "dtype", "data_options", "loss", "pretrain",
                "optimizer", "rate_options")
# What runs recorded before a choice existed did: their config.json lacks the key.
_OLD_DEFAULTS = {"loss": "nll", "pretrain": None, "optimizer": "sgd", "rate_options": None}
OPTIMIZERS = ("sgd", *rate_methods)
# Datasets whose training batches are checked once, when the dataset is built: their batches
# skip the per-batch check that every other Dataset's batches get.
_TRUSTED_BATCHES = (ArrayDataset.train_batch, Shapeset.train_batch)


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
    pretrain : list of dict
        The pre-training log (see :func:`fastff.pretrain.pretrain_dae`); empty without one.
    dir : pathlib.Path or None
        The run directory, when ``out_dir`` was given.
    config : dict
    """

    model: MLP
    history: list = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    dir: Path = None
    config: dict = field(default_factory=dict)
    pretrain: list = field(default_factory=list)

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


def _check_dataset(data, dtype):
    """Everything train relies on from a Dataset, checked before the first step."""
    for name in ("n_in", "n_classes"):
        value = getattr(data, name, None)
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"dataset {data!r}: {name} must be a positive integer, got {value!r}")
    if data.n_classes < 2:
        raise InputError(f"dataset {data!r} has {data.n_classes} class; at least 2 are needed")
    if isinstance(data, ArrayDataset):  # checked when built; its values must also fit dtype
        x = data.train[0]
        limit = float(np.finfo(dtype).max)
        if x.dtype.itemsize > np.dtype(dtype).itemsize and float(np.abs(x).max()) > limit:
            raise InputError(f"dataset {data.name}: training inputs reach "
                             f"{float(np.abs(x).max()):.3g}, beyond the range of {np.dtype(dtype)}")


def _checked_batch(model, data, k, batch_size, trusted):
    """Training batch k as contiguous arrays of the model's dtype; checked unless trusted."""
    x, y = data.train_batch(k, batch_size)
    if trusted:
        return model.backend.to_device(x, model.dtype), model.backend.to_device(y, np.int64)
    try:
        x = model._check_x(x)
        y = model._check_y(y, x.shape[0])
    except InputError as exc:
        raise InputError(f"training batch {k} of {data!r}: {exc}") from None
    if x.shape[0] != batch_size:
        raise InputError(f"training batch {k} of {data!r} has {x.shape[0]} rows, "
                         f"batch_size is {batch_size}")
    return x, y


def _check_memory(sizes, batch_size, dtype):
    """Refuse, before allocating, a batch whose buffers cannot fit in memory."""
    per_row = (2 * sum(sizes[1:]) + sum(sizes[:-1]) + 2 * sizes[0]) * np.dtype(dtype).itemsize
    check_fits_memory(batch_size * per_row, f"batch_size={batch_size} for {'-'.join(map(str, sizes))}")


def _bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def train(arch="1000x5", *, dataset="shapeset", activation="tanh", init="normalized", lr=0.01,
          batch_size=10, updates=20_000, device="cpu", seed=0, eval_every=None, out_dir=None,
          progress=True, resume=False, overwrite=False, dtype="float32", data_options=None,
          data_dir=None, monitor_every=None, jacobian_every=None, loss="nll", pretrain=None,
          pretrain_updates=None, corruption=0.25, pretrain_lr=None, optimizer="sgd",
          damping=None, estimate_decay=None):
    """Train an MLP with SGD as in Glorot & Bengio (2010) and record the run.

    Parameters
    ----------
    arch : str or list of int
        Hidden layers (``"1000x5"`` or ``[1000] * 5``) or full sizes (``"1024-1000x5-9"``,
        whose first and last sizes must be the dataset's inputs and classes).
    dataset : str or Dataset
        ``shapeset`` (online, the default), ``mnist``, ``cifar10`` or ``small_imagenet``, or a
        Dataset object (its arrays are checked: float inputs, finite, labels in range).
    activation, init : str
        Hidden nonlinearity and weight initialization (see :mod:`fastff.activations`,
        :mod:`fastff.init`).
    lr : float
        Learning rate; the paper tunes it per network (reference section 1).
    batch_size : int
        10 in the paper.
    updates : int
        Number of SGD updates (minibatches). On resume: the total, at least what the
        checkpoint has done.
    device : str
        ``cpu`` or ``cuda``.
    seed : int
        Fixes weights and data order: the same seed gives the same numbers on the CPU.
    eval_every : int, optional
        Updates between evaluations (default: updates / 10; on resume, the saved run's).
        Update 0 is always evaluated.
    out_dir : str, optional
        Run directory (config.json, metrics.csv, stats.npz, checkpoint.npz). A directory that
        already holds a run is refused unless ``resume`` or ``overwrite`` is given.
    progress : bool
        Show a progress bar (and say when kernels are being compiled).
    resume : bool
        Continue the run in ``out_dir`` from its checkpoint; the result equals an uninterrupted
        run's.
    overwrite : bool
        Replace the run in ``out_dir``: every file of the old run is removed first.
    dtype : str
        ``float32`` or ``float64``.
    data_options : dict, optional
        Passed to :func:`fastff.data.load` (e.g. ``{"valid_size": 2000}`` for Shapeset).
    data_dir : str, optional
        Where to look for dataset files first (see :func:`fastff.data.load`).
    monitor_every : int, optional
        Updates between measurements of the paper's statistics on the fixed monitor set (the
        first 300 test examples; :mod:`fastff.monitor`). Update 0 and the last update are
        always measured. Default: updates / 10 (on resume, the saved run's), which keeps
        monitoring under 5% of the training time of the paper's net at batch 10 on the CPU;
        0 turns monitoring off.
    jacobian_every : int, optional
        Updates between layer-Jacobian decompositions, taken at monitor snapshots (the most
        expensive measurement; the last update is included). Default: at update 0 only, where
        the paper measures it.
    loss : str
        The output cost: ``nll`` (the paper's, default) or ``quadratic`` (the squared error
        between the softmax and the one-hot target; :mod:`fastff.losses`).
    pretrain : str, optional
        ``"dae"``: before the supervised updates, pre-train each hidden layer as a denoising
        auto-encoder (:mod:`fastff.pretrain`; the paper's reference of Fig. 11). The phase is
        logged to ``pretrain.csv`` and in ``Run.pretrain``.
    pretrain_updates : int, optional
        Auto-encoder updates per hidden layer (default: ``updates`` / 10).
    corruption : float
        Masking-noise probability of the auto-encoders (Vincent et al. 2008 use 0.25 among
        others).
    pretrain_lr : float, optional
        Learning rate of the auto-encoders (default: ``lr``).
    optimizer : str
        ``sgd`` (the paper's, default), or SGD with a per-parameter rate
        ``lr / (1 + A / damping)`` from a running estimate A (the paper's "second-order"
        trials, :mod:`fastff.kernels.rates`): ``diag_hessian``, the Gauss-Newton diagonal of
        LeCun et al. (1998b); ``grad_variance``, the per-example gradient's standard deviation.
        ``lr`` is then the largest rate a parameter gets.
    damping : float, optional
        The estimate's scale in the rate above (default:
        ``fastff.config.SECOND_ORDER_DAMPING[optimizer]``).
    estimate_decay : float, optional
        The running average's memory, in [0, 1) (default: ``config.SECOND_ORDER_DECAY``).

    Returns
    -------
    Run

    Raises
    ------
    DivergenceError
        When the loss becomes NaN or inf; the last good checkpoint is kept.
    RecordError
        When ``out_dir`` holds another run, or a file of the run to resume is damaged.
    """
    positive("lr", lr)
    positive("updates", updates, integer=True)
    positive("batch_size", batch_size, integer=True)
    check_seed(seed)
    progress, resume, overwrite = (_bool("progress", progress), _bool("resume", resume),
                                   _bool("overwrite", overwrite))
    if eval_every is not None:
        positive("eval_every", eval_every, integer=True)
    if monitor_every not in (None, 0):
        positive("monitor_every", monitor_every, integer=True)
    if jacobian_every is not None:
        positive("jacobian_every", jacobian_every, integer=True)
    if data_options is not None and not isinstance(data_options, dict):
        raise InputError(f"data_options must be a dict, got {type(data_options).__name__}")
    pretrain_options = check_pretrain(
        pretrain, max(1, updates // 10) if pretrain_updates is None else pretrain_updates,
        corruption, lr if pretrain_lr is None else pretrain_lr)
    if pretrain is None and (pretrain_updates, pretrain_lr) != (None, None):
        raise InputError("pretrain_updates and pretrain_lr need pretrain='dae'")
    choose("optimizer", optimizer, dict.fromkeys(OPTIMIZERS))
    rate_options = None
    if optimizer == "sgd":
        if (damping, estimate_decay) != (None, None):
            raise InputError("damping and estimate_decay are for optimizer='diag_hessian' or "
                             "'grad_variance'")
    else:
        _, damping, estimate_decay = check_rates(optimizer, damping, estimate_decay)
        rate_options = dict(damping=damping, decay=estimate_decay)
        if optimizer == "grad_variance" and batch_size < 2:
            raise InputError("optimizer='grad_variance' estimates a variance over each batch "
                             "and needs batch_size >= 2")
    if resume and overwrite:
        raise InputError("resume=True continues the run in out_dir and overwrite=True replaces "
                         "it: choose one")
    if (resume or overwrite) and out_dir is None:
        raise InputError(f"{'resume' if resume else 'overwrite'}=True needs out_dir, the run "
                         f"to {'continue' if resume else 'replace'}")
    record = RunDir(out_dir) if out_dir is not None else None
    if record is not None:
        if record.path.exists() and not record.path.is_dir():
            raise RecordError(f"{record.path} exists and is not a directory; choose another out_dir")
        if not resume and record.holds_run() and not overwrite:
            raise RecordError(
                f"{record.path} already holds a run ({', '.join(record.run_files())}); "
                "resume it (resume=True, --resume), replace it (overwrite=True, --overwrite) "
                "or choose another directory")
        old = record.read_config() if resume else None
    if isinstance(dataset, datasets.Dataset):
        data = dataset
    elif isinstance(dataset, str):
        data = datasets.load(dataset, seed=seed, data_dir=data_dir, **(data_options or {}))
    else:
        raise InputError(f"dataset must be a name or a fastff.data.Dataset, got {type(dataset).__name__}")
    sizes = parse_sizes(arch, data.n_in, data.n_classes)
    model = MLP(sizes, activation=activation, init=init, device=device, seed=seed, dtype=dtype,
                loss=loss)
    _check_dataset(data, model.dtype)
    _check_memory(sizes, batch_size, model.dtype)

    history, start, monitor_stats = [], 0, None
    rates = (model.new_rates(optimizer, damping, estimate_decay) if optimizer != "sgd" else None)
    if resume:
        # cadences not given are the saved run's: their defaults depend on ``updates``
        eval_every = old.get("eval_every") if eval_every is None else eval_every
        monitor_every = old.get("monitor_every") if monitor_every is None else monitor_every
        jacobian_every = old.get("jacobian_every") if jacobian_every is None else jacobian_every
    eval_every = max(1, updates // 10) if eval_every is None else eval_every
    monitor_every = max(1, updates // 10) if monitor_every is None else monitor_every
    config = dict(arch=sizes, dataset=data.name, activation=model.activation, init=init, lr=lr,
                  batch_size=batch_size, updates=updates, device=model.device, seed=seed,
                  eval_every=eval_every, monitor_every=monitor_every,
                  jacobian_every=jacobian_every, dtype=model.dtype.name,
                  data_options=data_options or {}, loss=model.loss,
                  pretrain=pretrain_options, optimizer=optimizer, rate_options=rate_options,
                  versions=versions(),
                  threads=thread_counts())
    if resume:
        old = {**_OLD_DEFAULTS, **old}
        diff = [k for k in RESUME_FIXED if old.get(k) != config[k]]
        if diff:
            raise InputError(f"cannot resume {out_dir}: {', '.join(diff)} differ from the saved "
                             f"run ({', '.join(f'{k}={old.get(k)!r}' for k in diff)})")
        state, start, history = record.load_checkpoint()
        if updates < start:
            raise InputError(f"cannot resume {out_dir} with updates={updates}: its checkpoint "
                             f"has already done {start}; ask for more to extend it")
        try:
            model.load_state(state)
            if rates is not None:
                rates.load_state(state, model.backend)
        except InputError as exc:
            raise RecordError(f"{record.checkpoint_path} does not fit this run: {exc}") from None
        monitor_stats = record.load_stats().until(start)
        if len(monitor_stats) and monitor_stats[0].n_layers != model.n_hidden:
            raise RecordError(f"{record.stats_path} holds {monitor_stats[0].n_layers} layers, "
                              f"the run has {model.n_hidden}")
        saved_blas = (old.get("threads") or {}).get("blas")
        if (batch_size > fastff_config.CPU_SMALL_BATCH_MAX and saved_blas is not None
                and saved_blas != config["threads"]["blas"]):
            warnings.warn(f"{out_dir} ran with {saved_blas} BLAS threads and resumes with "
                          f"{config['threads']['blas']}: at batch_size {batch_size} (above "
                          f"{fastff_config.CPU_SMALL_BATCH_MAX}) the products go to BLAS, whose "
                          "sums can differ in their last bits, so the result may not be "
                          "bit-identical to an uninterrupted run", RuntimeWarning, stacklevel=2)
        if start == updates:  # nothing left to do: the saved run, unchanged
            return Run(model=model, history=history, stats=monitor_stats,
                       dir=record.path, config=old, pretrain=record.read_pretrain())
    if record is not None:
        record.prepare()
        if overwrite:
            record.clear()
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
    losses, read_losses = [], []
    t0 = 0.0

    def read():
        # the losses stay on the device until now: one read per evaluation, or per
        # config.LOSS_READ_EVERY steps (a device keeps a ring of them, not all)
        backend = model.backend
        if losses:
            read_losses.append(backend.to_host(backend.xp.stack(losses))
                               if backend.loss_on_device else np.asarray(losses, np.float64))
            losses.clear()

    def log(update):
        read()
        host = np.concatenate(read_losses) if read_losses else np.zeros(0)
        read_losses.clear()
        bad = np.flatnonzero(~np.isfinite(host))
        if bad.size:
            diverged(update - len(host) + int(bad[0]) + 1, host[bad[0]])
        if rates is not None and not rates.finite(model.backend.xp):
            diverged(update, what="the per-parameter rates' estimates became inf or NaN (found)")
        valid_err, test_err = _evaluate(model, data)
        row = dict(update=update, examples=update * batch_size,
                   train_loss=float(np.mean(host)) if host.size else math.nan,
                   valid_error=valid_err, test_error=test_err,
                   seconds=round(time.perf_counter() - t0, 3),
                   monitor_seconds=round(monitor_seconds, 3))
        row.update(_layer_columns(stats.summary()))
        history.append(row)
        stats.reset()
        if record is not None:
            record.save_checkpoint(model, update, history,
                                   rates.state(model.backend) if rates is not None else None)
            record.write_metrics(history, monitor.stats if monitor else None)
        return row

    def diverged(update, loss=None, what=None):
        where = f"; last good checkpoint: {record.checkpoint_path}" if record else ""
        what = what or f"loss became {loss}"
        raise DivergenceError(f"{what} at update {update} (lr={lr}){where}")

    trusted = type(data).train_batch in _TRUSTED_BATCHES
    pretrain_log = []
    check_each_step = not model.backend.loss_on_device  # free on the host; a GPU waits for a log
    # NaN/inf after a divergence is reported by DivergenceError, not by NumPy warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # the parallel passes compile in another process; the serial twins (the same numbers)
        # compile here, before the clock starts (fastff/warmup.py)
        parallel = ParallelCompile(model, batch_size, optimizer)
        try:
            notice = CompileNotice(progress)
            with numba_event.install_listener("numba:run_pass", notice):
                warm_up(model, batch_size, optimizer)
            notice.done()
            parallel.start(compiled=notice.compiled)
            if pretrain_options is not None and start == 0 and not history:
                pretrain_log = _pretrain(model, data, batch_size, trusted, seed, pretrain_options,
                                         record, progress)
            elif resume and record is not None:
                pretrain_log = record.read_pretrain()
            # the clock starts after compiling; a resumed run's goes on from the saved run's
            t0 = time.perf_counter() - (history[-1].get("seconds", 0.0) if history else 0.0)
            if start == 0 and not history:
                observe(0)
                log(0)
            bar = _progress(progress, start, updates)
            for k in range(start, updates):
                x, y = _checked_batch(model, data, k, batch_size, trusted)
                loss = model._step(x, y, lr, stats, rates)
                if parallel.pending:
                    parallel.poll()
                if check_each_step and not math.isfinite(loss):
                    diverged(k + 1, loss)
                losses.append(loss)
                if len(losses) >= fastff_config.LOSS_READ_EVERY:
                    read()
                observe(k + 1)
                if (k + 1) % eval_every == 0 or k + 1 == updates:
                    row = log(k + 1)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['train_loss']:.3f}", valid=f"{row['valid_error']:.3f}")
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
        finally:
            parallel.close()
    return Run(model=model, history=history, stats=monitor.stats if monitor else Stats(),
               dir=record.path if record else None, config=config, pretrain=pretrain_log)


def _pretrain(model, data, batch_size, trusted, seed, options, record, progress):
    """The denoising auto-encoder phase before update 0; its log goes to pretrain.csv as it
    grows."""
    rows = []

    def on_log(row):
        rows.append(row)
        if record is not None:
            record.write_pretrain(rows)
        if progress:
            print(f"fastff: pre-training layer {row['layer']}/{model.n_hidden}, update "
                  f"{row['update']}/{options['pretrain_updates']}: reconstruction "
                  f"{row['reconstruction']:.4g}", file=sys.stderr, flush=True)

    # the validation inputs tell the data's range (a first batch alone may not span it)
    x_valid = data.valid[0]
    pretrain_dae(model, lambda k: _checked_batch(model, data, k, batch_size, trusted),
                 updates=options["pretrain_updates"], lr=options["pretrain_lr"],
                 corruption=options["corruption"], seed=seed, on_log=on_log,
                 input_range=(float(x_valid.min()), float(x_valid.max())))
    return rows


def _progress(enabled, start, total):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=start, unit="upd", dynamic_ncols=True)
