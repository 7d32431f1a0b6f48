"""Several runs at once: :func:`train_many`.

On a GPU the paper's net at batch 10 leaves most of the device idle, and Table 1 is dozens of
runs of one shape. ``train_many`` trains them in lockstep: at every round each run makes one
step, and the runs of one shape, activation, dtype, batch size and cost make theirs in one
persistent launch (:class:`fastff.kernels.cuda.step.Lockstep`: the weights of every net in
one layer table, the net's index part of the grid's work list). Everything else stays each
run's own: its data, learning rate, init, seed, statistics, evaluations, checkpoints and run
directory, as :func:`fastff.train` makes them; a net's bits are those of training it alone.

On a GPU the runs are set up one by one while the device's free memory would hold
``config.TRAIN_MANY_MEMORY_MARGIN`` more like the last (measured, not estimated); the others
train in a later wave, with a warning. On the CPU the runs train one after another (the
kernels already use every core), with the same results and the same API.

On both, an interrupt names the configs that stopped at a checkpoint and those that had not
started, and the same call with ``resume=True`` continues the first and starts the others.
"""
import traceback
import warnings
from pathlib import Path

import numpy as np

from ..device import resolve
from ..errors import FastffError, InputError
from ..kernels import get_backend
from ..record import RunDir
from .. import config as fastff_config
from . import options
from .signals import Interrupted, StopRequests
from .trainer import Trainer

ERRORS = ("raise", "return")


def train_many(configs, *, device=None, errors="raise"):
    """Train several configurations, in lockstep on a GPU, one after another on the CPU.

    Parameters
    ----------
    configs : sequence of dict
        One dict per run: ``arch`` (default ``"1000x5"``) and any option of
        :func:`fastff.train` (``lr``, ``activation``, ``init``, ``seed``, ``out_dir``, ...).
        Runs that write records need distinct ``out_dir``.
    device : str, optional
        The device of every run (default: each config's own ``device``).
    errors : {"raise", "return"}
        A run that fails (diverges, meets bad data, or raises anything else) stops with its
        last good checkpoint while the others go on. ``"raise"``: once they are done, the
        first failure is raised; a config that fails its checks (a bad option value, a
        device that cannot be used) is raised before anything trains. ``"return"``: the
        exception takes the run's place in the returned list, a config that fails its
        checks included (its message names ``configs[i]``), and the others train.

    Returns
    -------
    list of Run
        In the order of ``configs`` (on a GPU, as many train at once as its memory holds; the
        others after them). Each run's ``history`` ``seconds`` are the wall time of
        the lockstep it was part of.

    Raises
    ------
    Interrupted
        On SIGINT or SIGTERM: every run under way finishes its step and writes its
        checkpoint. The message names the configs that stopped at a checkpoint and those that
        had not started; the same call with ``resume=True`` in every config continues the
        first and starts the others (a directory without a run starts from update 0).
    """
    if errors not in ERRORS:
        raise InputError(f"errors must be one of {', '.join(map(repr, ERRORS))}, got {errors!r}")
    runs = _checked(configs, device, errors)
    results = [run if isinstance(run, Exception) else None for run in runs]
    together = [i for i, run in enumerate(runs) if results[i] is None and _on_gpu(run[1])]
    alone = [i for i in range(len(runs)) if results[i] is None and i not in together]
    try:
        if together:
            _lockstep(runs, together, results)
        for i in alone:
            try:
                results[i] = Trainer(*runs[i]).run()
            except Interrupted as exc:
                exc.stopped = [i] if exc.update is not None else []
                raise
            except Exception as exc:  # noqa: BLE001 -- a run's failure is its own
                results[i] = exc
    except Interrupted as exc:
        stopped = getattr(exc, "stopped", [])
        raise _named(exc, stopped, [i for i in together + alone
                                    if results[i] is None and i not in stopped]) from None
    failed = [r for r in results if isinstance(r, Exception)]
    if failed and errors == "raise":
        raise failed[0]
    return results


def _checked(configs, device, errors):
    """Every config checked (as fastff.train checks its options, its device too) before any
    run starts: a list of (arch, options), or for a config that fails its checks the error
    that names it (``errors="return"``; with ``"raise"`` it is raised)."""
    if isinstance(configs, (dict, str)) or not hasattr(configs, "__iter__"):
        raise InputError(f"configs must be a list of dicts, got {type(configs).__name__}")
    runs, dirs = [], {}
    for i, config in enumerate(configs):
        if not isinstance(config, dict):
            raise InputError(f"configs[{i}] must be a dict of train() options, got "
                             f"{type(config).__name__}")
        try:
            run = _checked_one(config, device)
        except FastffError as exc:
            named = type(exc)(f"configs[{i}]: {exc}")
            if errors == "raise":
                raise named from None
            runs.append(named)
            continue
        out_dir = run[1].out_dir
        if out_dir is not None:
            key = str(Path(out_dir).resolve())
            if key in dirs:
                raise InputError(f"configs[{dirs[key]}] and configs[{i}] write to one out_dir "
                                 f"({out_dir}): each run needs its own")
            dirs[key] = i
        runs.append(run)
    if not runs:
        raise InputError("configs is empty: nothing to train")
    return runs


def _checked_one(config, device):
    """One config's (arch, checked options); its device is resolved (a DeviceError where it
    cannot be used)."""
    kwargs = dict(config)
    arch = kwargs.pop("arch", "1000x5")
    if device is not None:
        kwargs["device"] = device
    v = options.check(kwargs)
    resolve(v.device)
    return arch, v


def _on_gpu(v):
    """Whether the run's kernels step several nets in one launch (a GPU's); its device was
    resolved by :func:`_checked_one`."""
    return get_backend(v.device).can("lockstep")


def _group_key(t):
    """Runs that can share a launch: one shape, dtype, activation, cost and batch size, on the
    persistent step (any other run steps alone, and a failure of its step is its own)."""
    m, v = t.model, t.v
    if not m.plan.lockstep_applies(m, v.batch_size, t.rates):
        return ("alone", id(t))
    return (tuple(m.sizes), m.dtype.str, m.activation, m.loss, v.batch_size)


def _lockstep(runs, indices, results):
    """The runs ``indices`` of ``runs`` in lockstep, as many at once as the device's memory
    holds (:func:`_set_up`); their Runs (or failures) into ``results``. An :class:`Interrupted`
    it raises names in ``stopped`` the configs that stopped at a checkpoint."""
    pending = list(indices)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
            StopRequests() as stop:
        while pending:
            stop.deferring = False  # until the rounds start, a signal stops at once
            try:
                live, rest = _set_up(runs, pending, results, stop)
            except Interrupted as exc:  # none of this wave has stepped
                exc.stopped = []
                raise
            if rest:
                warnings.warn(f"fastff.train_many: the device holds {len(live)} of these "
                              f"{len(pending)} runs at once; the other {len(rest)} train "
                              "after them", RuntimeWarning, stacklevel=3)
            pending = rest
            _rounds(live, results, stop)
            if stop.requested and rest:  # the signal came with the wave's last step
                exc = Interrupted("interrupted: the runs started have finished", stop.signum)
                exc.stopped = []
                raise exc


def _named(exc, stopped, rest):
    """``exc`` naming the configs that stopped at their checkpoints and those that had not
    started, and how to go on with both."""
    parts = []
    if stopped:
        parts.append(f"configs {_listed(stopped)} stopped at their checkpoints")
    if rest:
        parts.append(f"configs {_listed(rest)} had not started")
    if not parts:
        return exc
    return Interrupted(f"{exc}; {'; '.join(parts)}: call train_many again with resume=True in "
                       "every config to continue the runs stopped and start the others",
                       exc.signum, exc.update)


def _listed(indices):
    return ", ".join(map(str, indices))


def _set_up(runs, pending, results, stop):
    """Set up the runs of ``pending`` in turn (each with its data and evaluation sets staged
    on the device) until the device's free memory would not hold
    ``config.TRAIN_MANY_MEMORY_MARGIN`` more runs like the last, or one runs out of it; returns
    (index -> Trainer of the runs set up, the indices left for a later wave)."""
    live = {}
    rt = get_backend(runs[pending[0]][1].device).runtime()
    for n, i in enumerate(pending):
        record = RunDir(runs[i][1].out_dir) if runs[i][1].out_dir is not None else None
        fresh = record is not None and (not record.holds_run()
                                        or record.stopped_before_first_checkpoint())
        before, t = rt.free_bytes(), None
        try:
            t = Trainer(*runs[i])
            if t.finished:
                results[i] = t.result()
                continue
            t.stop = _SharedStop(stop)
            t.prepare()
            t.compile()
            t.pretrain_or_read_log()
            t.stage()
        except MemoryError as exc:  # CuPy's OutOfMemoryError is one
            if live:  # the device is full: this run waits for the next wave, as it came
                if fresh:
                    record.clear()
                return live, pending[n:]
            results[i] = _kept(exc)
            continue
        except Exception as exc:  # noqa: BLE001 -- a run's failure is its own
            results[i] = _kept(exc)
            continue
        finally:
            if t is not None:  # on a path that never reached compile(), which says it first
                t.notice.done()
        live[i] = t
        after = rt.free_bytes()
        if before is not None and after is not None and n + 1 < len(pending) and \
                after < fastff_config.TRAIN_MANY_MEMORY_MARGIN * max(before - after, 0):
            return live, pending[n + 1:]
    return live, []


def _kept(exc):
    """A failure to return: its traceback's frames let go of their locals (a run's device
    arrays among them), so that later waves get that memory back."""
    traceback.clear_frames(exc.__traceback__)
    return exc


def _rounds(live, results, stop):
    """Step the set-up runs ``live`` in lockstep until each ends, fails or is interrupted."""
    for i, t in list(live.items()):  # the clocks start together, after every setup
        try:
            t.begin()
        except Exception as exc:  # noqa: BLE001
            _drop(i, t, exc, live, results)
    if not live:
        return
    stop.deferring = True  # from here a signal stops every run after its step
    # every run's losses wait on the device in one ring: read them before it comes round
    read_every = max(1, min(fastff_config.LOSS_READ_EVERY,
                            fastff_config.CUDA_STEP_LOSS_RING // (2 * len(live))))
    groups = {}
    for i, t in live.items():
        t.read_every = read_every
        groups.setdefault(_group_key(t), []).append(i)
    steppers = {key: live[members[0]].model.plan.new_lockstep()
                for key, members in groups.items() if key[0] != "alone"}
    own = {}  # run -> its own copy of a batch drawn from a dataset another run shares
    while live:
        stopped = []
        for key, members in groups.items():
            members[:] = [i for i in members if i in live]
            if members:
                stopped += _round(members, live, steppers.get(key), results, own)
        if stop.requested and live:  # runs that stepped before the signal came
            for i, t in list(live.items()):
                t.checkpoint(t.next)
                t.end()
                stopped.append((i, t.interrupted(t.next)))
                del live[i]
        if stopped:
            stopped.sort(key=lambda pair: pair[0])
            exc = Interrupted(f"interrupted at update"
                              f"{'s' * (len(stopped) > 1)} "
                              f"{', '.join(str(e.update) for _, e in stopped)}",
                              stopped[0][1].signum)
            exc.stopped = [i for i, e in stopped if e.update is not None]
            raise exc


def _round(members, live, stepper, results, own):
    """One step of each run of ``members`` (``own``: the runs' own batch buffers, see
    :func:`_own_copy`); returns (config index, Interrupted) of the runs a signal stopped."""
    made, shared = [], _shared_data([live[i] for i in members])
    for i in members:
        t = live[i]
        try:
            x, y = t.batch(t.next)
            if id(t.data) in shared:  # its buffers are another run's too: keep this batch
                x, y = _own_copy(own, i, t, x, y)
            made.append((i, t, x, y))
        except Exception as exc:  # noqa: BLE001 -- a run's failure is its own
            _drop(i, t, exc, live, results)
    if not made:
        return []
    if stepper is not None:
        _, trainers, xs, ys = zip(*made)
        try:
            losses = stepper.step([t.model for t in trainers], xs, ys,
                                  [t.v.lr for t in trainers], [t.stats for t in trainers])
        except Exception as exc:  # noqa: BLE001 -- the launch was the group's: so is the failure
            for i, t, _, _ in made:
                _drop(i, t, exc, live, results)
            return []
    else:
        losses = []
        for i, t, x, y in made:
            try:
                losses.append(t.model.step_unchecked(x, y, t.v.lr, t.stats, t.rates))
            except Exception as exc:  # noqa: BLE001 -- a run's failure is its own
                _drop(i, t, exc, live, results)
                losses.append(None)
    stopped = []
    for (i, t, _, _), loss in zip(made, losses):
        if i not in live:
            continue
        try:
            t.stepped(t.next, loss)
        except Interrupted as exc:
            stopped.append((i, exc))
            del live[i]
            continue
        except Exception as exc:  # noqa: BLE001 -- a run's failure is its own
            _drop(i, t, exc, live, results)
            continue
        if t.next == t.v.updates:
            t.end()
            results[i] = t.result()
            del live[i]
    return stopped


def _shared_data(trainers):
    """The ids of Dataset objects that several of ``trainers`` draw from (their device
    batches live in the dataset's reused buffers, so one run's batch would overwrite
    another's before the launch)."""
    ids = [id(t.data) for t in trainers]
    return {d for d in ids if ids.count(d) > 1}


def _own_copy(buffers, i, t, x, y):
    """The batch of run ``i`` (its Trainer ``t``) copied into buffers of its own, kept in
    ``buffers`` (made once, reused)."""
    own = buffers.get(i)
    if own is None or own[0].shape != x.shape or own[0].dtype != x.dtype:
        xp = t.model.backend.xp
        own = buffers[i] = (xp.empty_like(x), xp.empty_like(y))
    own[0][...] = x
    own[1][...] = y
    return own


class _SharedStop:
    """A run's view of the lockstep's StopRequests: it sees a signal, and leaves when to defer
    one to the lockstep (a run that ends must not end the deferring of the others)."""

    def __init__(self, stop):
        self._stop = stop

    requested = property(lambda self: self._stop.requested)
    signum = property(lambda self: self._stop.signum)
    deferring = property(lambda self: self._stop.deferring, lambda self, value: None)


def _drop(i, t, exc, live, results):
    """Run ``i`` failed: it stops (its last good checkpoint stays) and the others go on."""
    t.end()
    results[i] = _kept(exc)
    del live[i]
