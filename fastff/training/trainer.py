"""The training loop of the paper: minibatch SGD (plain, or with the per-parameter rates of
:mod:`fastff.kernels.rates`), periodic evaluation and monitoring, checkpoints, and a run record.

:class:`Trainer` holds one run: :meth:`Trainer.run` sets it up (data, model, record, resume),
then steps; each step's loss stays on the device until :meth:`Trainer.log` reads it.
"""
import math
import sys
from time import perf_counter as clock
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba.core import event as numba_event

from .. import config as fastff_config, data as datasets
from ..arch import parse_sizes
from ..data.base import ArrayDataset
from ..data.shapeset import Shapeset
from ..data.sources import check_fits_memory
from ..errors import DivergenceError, InputError
from ..model import MLP
from ..monitor import Monitor, Stats
from ..record import RunDir, thread_counts, versions
from . import options as opts, resume
from .pretrain import pretrain_dae
from .signals import Interrupted, StopRequests
from .threads import ThreadChoice
from .warmup import CompileNotice, ParallelCompile, warm_up

# Datasets whose training batches are checked once, when the dataset is built: their batches
# skip the per-batch check that every other Dataset's batches get.
_TRUSTED_BATCHES = (ArrayDataset.train_batch, Shapeset.train_batch)


@dataclass
class Run:
    """The result of :func:`fastff.train`.

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
        The pre-training log (see :func:`fastff.training.pretrain.pretrain_dae`); empty
        without one.
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

    def _repr_html_(self):
        from ..notebook import run_html
        return run_html(self)


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


def _check_memory(sizes, batch_size, dtype):
    """Refuse, before allocating, a batch whose buffers cannot fit in memory."""
    per_row = (2 * sum(sizes[1:]) + sum(sizes[:-1]) + 2 * sizes[0]) * np.dtype(dtype).itemsize
    check_fits_memory(batch_size * per_row, f"batch_size={batch_size} for {'-'.join(map(str, sizes))}")


def _load_data(v, saved=None):
    """The run's dataset; a resumed Shapeset run keeps the stream its record names."""
    dataset = v.dataset
    if isinstance(dataset, datasets.Dataset):
        if v.data_seed is not None:
            raise InputError("data_seed chooses the data of a named dataset; a Dataset object "
                             "carries its own seed")
        return dataset
    if isinstance(dataset, str):
        seed = v.seed if v.data_seed is None else v.data_seed
        options = dict(v.data_options or {})
        if dataset == "shapeset" and saved is not None and "generator" not in options:
            options["generator"] = resume.saved_stream(saved)
        return datasets.load(dataset, seed=seed, data_dir=v.data_dir, **options)
    raise InputError(f"dataset must be a name or a fastff.data.Dataset, got {type(dataset).__name__}")


class Trainer:
    """One run of :func:`fastff.train`.

    Parameters
    ----------
    arch : str or list of int
        As :func:`fastff.train`'s.
    v : TrainOptions or dict, optional
        :func:`fastff.train`'s options (:class:`~fastff.training.TrainOptions`, or a dict of
        them by name, checked here: unknown names and bad values raise InputError).
    """

    def __init__(self, arch="1000x5", v=None):
        self.v = v = opts.check({} if v is None else v)
        self.record = RunDir(v.out_dir) if v.out_dir is not None else None
        saved = resume.open_record(self.record, v.resume, v.overwrite)
        self.resuming = saved is not None
        # on a first run the data's and the initialization's kernels compile here: the notice
        # says so from the first of them, and its time counts them (compile() ends it)
        self.notice = CompileNotice(v.progress)
        with numba_event.install_listener("numba:run_pass", self.notice):
            self.data = _load_data(v, saved)
            self.sizes = parse_sizes(arch, self.data.n_in, self.data.n_classes)
            self.model = MLP(self.sizes, activation=v.activation, init=v.init,
                             device=v.device, seed=v.seed, dtype=v.dtype,
                             loss=v.loss, tf32=v.tf32)
        _check_dataset(self.data, self.model.dtype)
        _check_memory(self.sizes, v.batch_size, self.model.dtype)
        self.rates = (self.model.new_rates(v.optimizer, v.derived.rates["damping"],
                                           v.derived.rates["decay"])
                      if v.derived.rates is not None else None)
        self.cadence = resume.resolve_cadences(v, saved)
        self.config = opts.config_json(v, self.cadence, self.sizes, self.data, self.model,
                                       versions(), thread_counts())
        self.history, self.start, self.pending = [], 0, {}
        monitor_stats = None
        if saved is not None:
            state = resume.restore(self, saved)
            monitor_stats, self.pending = state["monitor_stats"], state["pending"]
        self.monitor = Monitor.from_dataset(self.data) if self.cadence.monitor_every else None
        if self.monitor is not None and monitor_stats is not None:
            self.monitor.stats = monitor_stats
        self.stats = self.model.new_stats()
        self.losses, self.read_losses = [], []
        self.monitor_seconds = self.history[-1].get("monitor_seconds", 0.0) if self.history else 0.0
        resume.apply_pending(self)
        self.t0 = 0.0
        self.pretrain_log = []
        self.stop = None
        self.threads = None  # its ThreadChoice, made by compile()
        self.trusted = type(self.data).train_batch in _TRUSTED_BATCHES
        self.read_every = fastff_config.LOSS_READ_EVERY  # losses kept on the device at most

    # -- the loop ----------------------------------------------------------------------------
    @property
    def finished(self):
        """Whether a resumed run has nothing left to train."""
        return self.start == self.v.updates and self.v.resume

    def run(self):
        """Train to ``updates`` and return the :class:`Run`."""
        try:
            if self.finished:  # nothing left: the saved run, unchanged
                return self.result()
            self.prepare()
            # NaN/inf after a divergence is reported by DivergenceError, not by NumPy warnings
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
                    StopRequests() as self.stop:
                # the parallel passes compile in another process; the serial twins (the same
                # numbers) compile here, before the clock starts (warmup.py)
                parallel = ParallelCompile(self.model, self.v.batch_size, self.v.optimizer)
                try:
                    self.compile(parallel)
                    self.pretrain_or_read_log(parallel)
                    self._steps(parallel)
                finally:
                    parallel.close()
            return self.result()
        except Interrupted as exc:
            raise self.before_first_checkpoint(exc) from None
        finally:
            self.notice.done()  # on a path that never reached compile(), which says it first

    def prepare(self):
        """Make the run directory and write the run's config (before any step)."""
        record = self.record
        if record is not None:
            record.prepare()
            if not self.resuming:  # a run from update 0 keeps no file of an earlier one
                record.clear()
            record.write_config(self.config)

    def compile(self, parallel=None):
        """Compile (or load) the kernels of a step of this model before the clock starts."""
        v, notice = self.v, self.notice
        if parallel is not None:
            parallel.launch()
        notice.compiled = False  # whether the step's kernels compiled (a cold cache)
        try:
            with numba_event.install_listener("numba:run_pass", notice):
                warm_up(self.model, v.batch_size, v.optimizer)
                if self.monitor is not None:  # else its kernels compile at update 0, on the clock
                    self.monitor.warm_up(self.model)
        finally:
            notice.done()
        if parallel is not None:
            parallel.start(compiled=notice.compiled)
        self.threads = ThreadChoice(self.model, v.batch_size, parallel)

    def result(self):
        """The :class:`Run` (a finished resumed run: the saved one, unchanged)."""
        saved = self.finished  # (resume=True: there is a record)
        return Run(model=self.model, history=self.history,
                   stats=self.monitor.stats if self.monitor else Stats(),
                   dir=self.record.path if self.record else None,
                   config=self.saved_config if saved else self.config,
                   pretrain=self.record.read_pretrain() if saved else self.pretrain_log)

    def _steps(self, parallel):
        self.begin()
        v, threads = self.v, self.threads
        threads.restart()
        for k in range(self.start, v.updates):
            x, y = self.batch(k)
            self.stepped(k, self.model.step_unchecked(x, y, v.lr, self.stats, self.rates), parallel)
            threads.tick()
        self.end()

    def begin(self):
        """What comes before the first step: the clock, the record of update 0, the bar."""
        v, model = self.v, self.model
        # the clock starts after compiling; a resumed run's goes on from the saved run's
        self.t0 = clock() - self._saved_seconds()
        if self.start == 0 and not self.history:
            self.observe(0)
            self.log(0)
        self.next = self.start  # the update the next step makes (lockstep: fastff.train_many)
        self.check_each_step = not model.backend.loss_on_device  # a GPU's loss waits for a log
        self.every = v.checkpoint_every if self.record is not None else 0
        self.last_checkpoint = clock()
        self.bar = _progress(v.progress, self.start, v.updates)
        self.stop.deferring = True

    def stepped(self, k, loss, parallel=None):
        """What follows step ``k`` (whose loss is ``loss``): the loss kept, the monitor, the
        evaluation or checkpoint due, and a stop requested by a signal (:class:`Interrupted`
        after the checkpoint)."""
        v = self.v
        self.next = k + 1
        if parallel is not None and parallel.pending:
            parallel.poll()
        if self.check_each_step and not math.isfinite(loss):
            self.diverged(k + 1, loss)
        self.losses.append(loss)
        if len(self.losses) >= self.read_every:
            self.read()
        self.observe(k + 1)
        if (k + 1) % self.cadence.eval_every == 0 or k + 1 == v.updates:
            row = self.log(k + 1)
            self.last_checkpoint = clock()
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                                     valid=f"{row['valid_error']:.3f}")
        elif self.stop.requested or (self.every and clock() - self.last_checkpoint >= self.every):
            self.checkpoint(k + 1)
            self.last_checkpoint = clock()
        if self.bar is not None:
            self.bar.update(1)
        if self.stop.requested and k + 1 < v.updates:
            self.end()
            raise self.interrupted(k + 1)

    def end(self):
        """After the last step (or before an interruption is raised)."""
        self.stop.deferring = False
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def batch(self, k):
        """Training batch k as contiguous arrays of the model's dtype; checked unless trusted.
        For CUDA kernels a built-in dataset makes it on the device (a finite set gathered from
        its staged copy, Shapeset's counter stream rendered there); otherwise it is uploaded."""
        model, batch_size, trusted = self.model, self.v.batch_size, self.trusted
        made = self.data.device_batch(k, batch_size, model.backend) if trusted and \
            self.on_device else None
        if made is not None:
            x, y = made
            return (x if x.dtype == model.dtype else x.astype(model.dtype)), y
        x, y = self.data.train_batch(k, batch_size)
        if trusted:
            return model.backend.to_device(x, model.dtype), model.backend.to_device(y, np.int64)
        try:
            x = model.check_x(x)
            y = model.check_y(y, x.shape[0])
        except InputError as exc:
            raise InputError(f"training batch {k} of {self.data!r}: {exc}") from None
        if x.shape[0] != batch_size:
            raise InputError(f"training batch {k} of {self.data!r} has {x.shape[0]} rows, "
                             f"batch_size is {batch_size}")
        return x, y

    # -- what happens between steps -----------------------------------------------------------
    def observe(self, update):
        """The monitor's snapshot at its cadence (and at update 0 and the last update)."""
        v = self.v
        if self.monitor is None or not (update % self.cadence.monitor_every == 0
                                        or update == v.updates):
            return
        t = clock()
        every = self.cadence.jacobian_every
        jac = update == 0 or bool(every and (update % every == 0 or update == v.updates))
        self.monitor(self.model, update=update, examples=update * v.batch_size, jacobian=jac)
        self.monitor_seconds += clock() - t
        if self.record is not None:
            self.record.save_stats(self.monitor.stats)

    def read(self):
        """Move the losses kept on the device to the host: at every evaluation, or every
        config.LOSS_READ_EVERY steps (a device keeps a ring of them, not all)."""
        backend = self.model.backend
        if self.losses:
            self.read_losses.append(backend.to_host(backend.xp.stack(self.losses))
                                    if backend.loss_on_device
                                    else np.asarray(self.losses, np.float64))
            self.losses.clear()

    def pending_losses(self):
        """The losses since the last evaluation, on the host."""
        self.read()
        return np.concatenate(self.read_losses) if self.read_losses else np.zeros(0)

    def log(self, update):
        """An evaluation: the history row, the checkpoint and the metrics file."""
        v, model = self.v, self.model
        host = self.pending_losses()
        self.read_losses.clear()
        bad = np.flatnonzero(~np.isfinite(host))
        if bad.size:
            self.diverged(update - len(host) + int(bad[0]) + 1, host[bad[0]])
        if self.rates is not None and not self.rates.finite(model.backend.xp):
            self.diverged(update, what="the per-parameter rates' estimates became inf or NaN (found)")
        valid_err = model.error(*self.eval_set("valid"))
        correct = model.correct(*self.eval_set("test"))
        test_err = float((~correct).mean())
        row = dict(update=update, examples=update * v.batch_size,
                   train_loss=float(np.mean(host)) if host.size else math.nan,
                   valid_error=valid_err, test_error=test_err,
                   seconds=round(self.elapsed(), 3),
                   monitor_seconds=round(self.monitor_seconds, 3))
        row.update(_layer_columns(self.stats.summary()))
        self.history.append(row)
        self.stats.reset()
        if self.record is not None:
            self.checkpoint(update)
            self.record.save_test_outcomes(update, correct)
            self.record.write_metrics(self.history, self.monitor.stats if self.monitor else None)
        return row

    @property
    def on_device(self):
        """Whether the model's kernels are the CUDA ones: its data is made or kept there."""
        return self.model.backend.can("device_data")

    def stage(self):
        """Make the run's device copies before its first step (the training set staged and its
        batch buffers, the validation and test sets), so that what it holds on the device can
        be measured before it steps (:func:`fastff.train_many`)."""
        if not self.on_device:
            return
        self.eval_set("valid")
        self.eval_set("test")
        if self.trusted:
            self.data.device_batch(self.start, self.v.batch_size, self.model.backend)

    def eval_set(self, name):
        """The validation or test set; for CUDA kernels a copy on the device, made at the first
        evaluation (not uploaded again at every one)."""
        x, y = getattr(self.data, name)
        if not self.on_device:
            return x, y
        staged = self.__dict__.setdefault("_eval_sets", {})
        if name not in staged:
            backend = self.model.backend
            staged[name] = (backend.to_device(x, self.model.dtype), backend.to_device(y, np.int64))
        return staged[name]

    def checkpoint(self, update):
        """Write the checkpoint at ``update``. Between evaluations it also keeps what the next
        evaluation's row is made of (the losses and kernel statistics since the last one, the
        clock), so that a run resumed from it is the same run."""
        if self.record is None:
            return
        extra = dict(self.rates.state(self.model.backend)) if self.rates is not None else {}
        last = self.history[-1]["update"] if self.history else 0
        if update != last:
            extra.update(resume.pending_state(self, update))
        self.record.save_checkpoint(self.model, update, self.history, extra or None)

    def interrupted(self, update):
        signum = self.stop.signum
        if self.record is None:
            where = "no out_dir, so nothing was saved"
        else:
            where = (f"checkpoint in {self.record.checkpoint_path}; continue with --resume "
                     "(resume=True)")
        return Interrupted(f"interrupted at update {update}; {where}", signum,
                           update if self.record is not None else None)

    def before_first_checkpoint(self, exc):
        """``exc`` saying how to go on when the run stopped before its first checkpoint (while
        its kernels compiled or it pre-trained): nothing is kept, and the same call starts it
        again (:func:`resume.open_record`)."""
        if self.record is None or self.record.checkpoint_path.is_file():
            return exc
        return Interrupted(f"{exc} before the first checkpoint of {self.record.path}: nothing "
                           "was trained; the same command (with or without --resume, "
                           "resume=True) starts it again from update 0", exc.signum, exc.update)

    def diverged(self, update, loss=None, what=None):
        record = self.record
        where = f"; last good checkpoint: {record.checkpoint_path}" if record else ""
        what = what or f"loss became {loss}"
        raise DivergenceError(f"{what} at update {update} (lr={self.v.lr}){where}")

    def elapsed(self):
        """Seconds the run has trained (a resumed run's include the saved run's)."""
        return clock() - self.t0

    def _saved_seconds(self):
        if "elapsed" in self.pending:
            return float(self.pending["elapsed"])
        return self.history[-1].get("seconds", 0.0) if self.history else 0.0

    def pretrain_or_read_log(self, parallel=None):
        """The pre-training phase, when the run has one and starts from update 0; a resumed
        run reads its log back instead."""
        v, record = self.v, self.record
        if v.derived.pretrain is not None and self.start == 0 and not self.history:
            self.pretrain_log = self._pretrain(v.derived.pretrain, parallel)
        elif v.resume and record is not None:
            self.pretrain_log = record.read_pretrain()

    def _pretrain(self, options, parallel=None):
        """The denoising auto-encoder phase before update 0; its log goes to pretrain.csv as it
        grows. Between its updates, as between steps, the parallel passes arrive when compiled
        and the faster of them and their serial twins is kept."""
        rows, model, record, v = [], self.model, self.record, self.v

        def batch(k):  # called once an update: after the one before
            if parallel is not None and parallel.pending:
                parallel.poll()
            if k == 0:  # a layer's updates cost more than the one's below: probe it anew
                self.threads.restart()
            else:
                self.threads.tick()
            return self.batch(k)

        def on_log(row):
            rows.append(row)
            if record is not None:
                record.write_pretrain(rows)
            if v.progress:
                print(f"fastff: pre-training layer {row['layer']}/{model.n_hidden}, update "
                      f"{row['update']}/{options['pretrain_updates']}: reconstruction "
                      f"{row['reconstruction']:.4g}", file=sys.stderr, flush=True)

        x_valid = self.data.valid[0]  # the validation inputs tell the data's range
        pretrain_dae(model, batch,
                     updates=options["pretrain_updates"], lr=options["pretrain_lr"],
                     corruption=options["corruption"], seed=v.seed, on_log=on_log,
                     input_range=(float(x_valid.min()), float(x_valid.max())))
        return rows


def _progress(enabled, start, total):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=start, unit="upd", dynamic_ncols=True)
