"""How long a reproduction will take here: its remaining runs and updates, the training step
timed on this machine, and the hours they imply, printed before the sweep starts."""
import os
import threading
import time

import numpy as np

from ..errors import FastffError
from ..record import RunDir
from ..sweeps import finished, run_name, varying


def remaining(points, runs_dir):
    """[(point, updates left)] of the runs not finished in ``runs_dir`` (an unfinished run
    counts from its last evaluation, where its checkpoint is at least)."""
    keys = varying(points)
    out = []
    for point in points:
        run_dir = runs_dir / run_name(point, keys)
        if finished(run_dir, point) is not None:
            continue
        done = 0
        try:
            history = RunDir(run_dir).read_metrics()
            done = int(history[-1]["update"]) if history else 0
        except (FastffError, OSError, ValueError, KeyError):  # no run yet, or unreadable: whole
            done = 0
        out.append((point, max(0, int(point["updates"]) - done)))
    return out


def step_seconds(sizes, batch_size, threads, seconds=1.0, together=None):
    """Seconds per training step (statistics on) of a ``sizes`` net at ``batch_size`` with
    ``threads`` kernel threads, timed here on random data after a warm-up (and, with a
    ``together`` barrier, once every process sharing it has warmed up too)."""
    import numba
    from ..model import MLP
    model = MLP(sizes, activation="tanh", init="normalized")
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch_size)
    stats = model.new_stats()
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        for _ in range(5):
            model.step(x, y, 1e-3, stats)
        if together is not None:
            try:
                together.wait(timeout=120)
            except threading.BrokenBarrierError:  # a worker that never came: time alone
                pass
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.step(x, y, 1e-3, stats)
            n += 1
        return (time.perf_counter() - t0) / n
    finally:
        numba.set_num_threads(before)


def _timed_in_a_worker(args):
    return step_seconds(*args)


def steps_at_once(sizes, batch_size, threads, workers, seconds=2.0):
    """Seconds per step of each of ``workers`` processes stepping a ``sizes`` net at once, as a
    sweep's workers do: they share the memory bandwidth and the last-level cache, which one
    net alone does not show. The slowest worker's time."""
    import concurrent.futures
    import multiprocessing
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    with context.Manager() as manager, concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context) as pool:
        args = (list(sizes), batch_size, threads, seconds, manager.Barrier(workers))
        return max(pool.map(_timed_in_a_worker, [args] * workers))


def estimate(points, runs_dir, shapes, workers=None, budget=None, widen=0):
    """The text printed before a reproduction starts: runs and updates left, the step time
    measured here per net, and the hours on ``workers`` worker processes.

    Parameters
    ----------
    points : list of dict
        The reproduction's train() arguments.
    runs_dir : pathlib.Path
        Where the runs are (finished ones are not counted).
    shapes : dict
        Dataset -> (inputs, classes).
    workers : int, optional
        Worker processes (default: one per core, as the sweep's LocalCluster).
    budget : Budget, optional
        For the evaluation sets' sizes.
    widen : int
        Rounds of widening that may follow (said, not counted: they depend on the results).

    Returns
    -------
    (text, hours)
    """
    from ..arch import parse_sizes
    left = remaining(points, runs_dir)
    cores = os.cpu_count() or 1
    workers = max(1, min(cores, workers or cores))
    threads = max(1, cores // workers)
    if not left:
        return f"all {len(points)} runs are finished", 0.0
    times, total = {}, 0.0
    for point, updates in left:
        sizes = tuple(parse_sizes(point["arch"], *shapes[point["dataset"]]))
        batch = int(point.get("batch_size", 10))
        if (sizes, batch) not in times:
            times[(sizes, batch)] = (step_seconds(list(sizes), batch, threads) if workers == 1
                                     else steps_at_once(sizes, batch, threads, workers))
        t = times[(sizes, batch)]
        evals = updates // max(1, int(point["eval_every"])) + 1
        rows = 0
        if budget is not None and point["dataset"] == "shapeset":
            rows = sum(budget.shapeset_sizes)
        # an evaluated example costs about a third of a trained one (the forward pass only)
        total += updates * t + evals * rows / batch * t / 3
    hours = total / workers / 3600
    steps = "; ".join(f"{'-'.join(map(str, s))} at batch {b}: {1e3 * t:.2f} ms"
                      for (s, b), t in times.items())
    alone = "alone" if workers == 1 else f"{workers} workers stepping at once"
    text = (f"estimate: {len(left)} of {len(points)} runs to train, "
            f"{sum(u for _, u in left):,} updates; the step timed here ({threads} thread"
            f"{'s' * (threads > 1)}, {alone}): {steps}; on {workers} worker"
            f"{'s' * (workers > 1)}: about {hours:.1f} h")
    if widen:
        text += (f"; then up to {widen} more run{'s' * (widen > 1)} per model and seed where "
                 "a chosen rate sits at its grid's edge")
    return text, hours
