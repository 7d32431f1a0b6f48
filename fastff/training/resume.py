"""Resuming a run from its record: which runs may be resumed, what their checkpoint restores.

A checkpoint written at an evaluation holds the parameters, the update count and the history.
One written between evaluations (every ``checkpoint_every`` seconds, or when a run is
interrupted) also holds what the next evaluation's row is made of: the losses since the last
evaluation (``pending_losses``), the kernels' statistics accumulated since then
(``pending_stats_*``) and the run's clocks (``pending_elapsed``, ``pending_monitor_seconds``), so
that the resumed run writes the same history, bit for bit, as an uninterrupted one.
"""
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import config as fastff_config
from ..data.shapeset import GENERATOR_BEFORE
from ..errors import InputError, RecordError
from . import options as opts

PENDING = "pending_"


def open_record(record, resume, overwrite):
    """Refuse an ``out_dir`` that cannot take this run; return the saved config.json of the run
    to resume (None when the run starts from update 0).

    A directory whose run stopped before its first checkpoint (Ctrl-C while its kernels
    compiled or it pre-trained: a config.json, no checkpoint and no metrics) holds nothing to
    resume: the run starts again from update 0, with or without ``resume``, and a warning says
    so. ``resume=True`` on a directory that holds no run yet starts it as well (so that the
    same call resumes the runs that have a checkpoint and starts the others).
    """
    if record is None:
        return None
    if record.path.exists() and not record.path.is_dir():
        raise RecordError(f"{record.path} exists and is not a directory; choose another out_dir")
    if overwrite:  # whatever it holds is replaced (Trainer.prepare clears it)
        return None
    if record.stopped_before_first_checkpoint():
        kept = " (its pre-training is not kept: it has no checkpoint)" if \
            (record.path / "pretrain.csv").is_file() else ""
        warnings.warn(f"fastff: {record.path} holds a run stopped before its first checkpoint"
                      f"{kept}: nothing to resume, it starts again from update 0",
                      RuntimeWarning, stacklevel=3)
        return None
    if not record.holds_run():
        if resume:
            warnings.warn(f"fastff: {record.path} holds no run yet: resume=True starts it "
                          "from update 0", RuntimeWarning, stacklevel=3)
        return None
    if not resume:
        raise RecordError(
            f"{record.path} already holds a run ({', '.join(record.run_files())}); "
            "resume it (resume=True, --resume), replace it (overwrite=True, --overwrite) "
            "or choose another directory")
    return opts.check_saved(record.read_config(), record.path / "config.json")


@dataclass(frozen=True)
class Cadence:
    """How often a run evaluates, monitors and decomposes the layer Jacobians, in updates
    (``monitor_every`` 0: never; ``jacobian_every`` None: at update 0 only), resolved from its
    options and, when it resumes, its saved record."""

    eval_every: int
    monitor_every: int
    jacobian_every: Optional[int]


def resolve_cadences(v, saved):
    """The run's :class:`Cadence`: each cadence not given is the saved run's when resuming
    (their defaults depend on ``updates``), else updates / 10 (``jacobian_every``: None)."""
    given = {name: getattr(v, name) for name in ("eval_every", "monitor_every", "jacobian_every")}
    for name, value in given.items():
        if saved is not None and value is None:
            given[name] = saved.get(name)
    for name in ("eval_every", "monitor_every"):
        if given[name] is None:
            given[name] = max(1, v.updates // 10)
    return Cadence(**given)


def saved_stream(config):
    """The Shapeset stream a run's ``config.json`` was drawn from (records that name none were
    drawn by the sequential stream); None for another dataset."""
    return config.get("shapeset_generator",
                      GENERATOR_BEFORE if config.get("dataset") == "shapeset" else None)


def _fixed(config, key):
    """What a resumed run must share with the saved one under ``key``: the Shapeset stream is
    compared as the record names it (``shapeset_generator``; records without it were drawn by
    the sequential stream), given in ``data_options`` or not."""
    if key != "data_options":
        return config.get(key)
    options = {k: v for k, v in (config.get(key) or {}).items() if k != "generator"}
    return options, saved_stream(config)


def _shown(config, key):
    if key != "data_options":
        return f"{key}={config.get(key)!r}"
    options, stream = _fixed(config, key)
    return f"data_options={options!r}" + (f", Shapeset stream {stream!r}" if stream else "")


def restore(trainer, saved):
    """Check that the saved run is this one and load its checkpoint into ``trainer`` (its
    model, rates, start, history); returns the monitor's snapshots and the pending state."""
    v, record, config = trainer.v, trainer.record, trainer.config
    old = {**opts.OLD_DEFAULTS, **saved}
    diff = [k for k in opts.RESUME_FIXED if _fixed(old, k) != _fixed(config, k)]
    if diff:
        raise InputError(f"cannot resume {v.out_dir}: {', '.join(diff)} differ from the saved "
                         f"run ({', '.join(_shown(old, k) for k in diff)})")
    state, start, history = record.load_checkpoint()
    if v.updates < start:
        raise InputError(f"cannot resume {v.out_dir} with updates={v.updates}: its "
                         f"checkpoint has already done {start}; ask for more to extend it")
    try:
        trainer.model.load_state(state)
        if trainer.rates is not None:
            trainer.rates.load_state(state, trainer.model.backend)
    except InputError as exc:
        raise RecordError(f"{record.checkpoint_path} does not fit this run: {exc}") from None
    monitor_stats = record.load_stats().until(start)
    if len(monitor_stats) and monitor_stats[0].n_layers != trainer.model.n_hidden:
        raise RecordError(f"{record.stats_path} holds {monitor_stats[0].n_layers} layers, "
                          f"the run has {trainer.model.n_hidden}")
    _warn_blas_threads(v, old, config)
    trainer.start, trainer.history, trainer.saved_config = start, history, old
    pending = {k[len(PENDING):]: a for k, a in state.items() if k.startswith(PENDING)}
    return dict(monitor_stats=monitor_stats, pending=pending)


def _warn_blas_threads(v, old, config):
    saved = old.get("threads") or {}
    if v.batch_size <= fastff_config.CPU_SMALL_BATCH_MAX:
        return
    for key, what in (("blas", "BLAS threads"), ("blas_library", "as its BLAS library")):
        if saved.get(key) is not None and saved[key] != config["threads"].get(key):
            warnings.warn(f"{v.out_dir} ran with {saved[key]} {what} and resumes with "
                          f"{config['threads'].get(key)}: at batch_size {v.batch_size} (above "
                          f"{fastff_config.CPU_SMALL_BATCH_MAX}) the products go to BLAS, whose "
                          "sums can differ in their last bits, so the result may not be "
                          "bit-identical to an uninterrupted run", RuntimeWarning, stacklevel=4)


def _stats_arrays(stats):
    """Every accumulator of a StepStats, by a stable name."""
    out = {}
    for kind, layers in (("f", stats.forward), ("b", stats.backward)):
        for l, s in enumerate(layers):
            for name in vars(s):
                a = getattr(s, name)
                if hasattr(a, "shape") and getattr(a, "ndim", 0) == 1:
                    out[f"stats_{kind}{l}_{name}"] = a
    return out


def pending_state(trainer, update):
    """What a checkpoint between evaluations keeps beyond the parameters (host arrays)."""
    backend = trainer.model.backend
    losses = trainer.pending_losses()
    last = trainer.history[-1]["update"] if trainer.history else 0
    assert len(losses) == update - last, (len(losses), update, last)
    out = {"losses": losses, "elapsed": np.float64(trainer.elapsed()),
           "monitor_seconds": np.float64(trainer.monitor_seconds)}
    out.update({k: backend.to_host(a) for k, a in _stats_arrays(trainer.stats).items()})
    return {PENDING + k: v for k, v in out.items()}


def apply_pending(trainer):
    """Put a checkpoint's pending state back: the losses and statistics since the last
    evaluation, the monitor's clock."""
    pending = trainer.pending
    if not pending:
        return
    last = trainer.history[-1]["update"] if trainer.history else 0
    losses = np.asarray(pending.get("losses", np.zeros(0)), np.float64)
    if losses.shape != (trainer.start - last,):
        raise RecordError(f"{trainer.record.checkpoint_path} holds {losses.size} losses since the "
                          f"last evaluation, not {trainer.start - last}")
    trainer.read_losses = [losses] if losses.size else []
    trainer.monitor_seconds = float(pending.get("monitor_seconds", trainer.monitor_seconds))
    backend = trainer.model.backend
    for name, a in _stats_arrays(trainer.stats).items():
        saved = pending.get(name)
        if saved is None or saved.shape != tuple(a.shape) or saved.dtype != a.dtype:
            raise RecordError(f"{trainer.record.checkpoint_path}: the statistics {name} do not "
                              "fit this run")
        a[...] = backend.to_device(saved, a.dtype)
