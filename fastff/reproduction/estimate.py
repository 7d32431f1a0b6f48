"""How long a reproduction will take here: its remaining runs and updates, the training step
timed on this machine, and the hours they imply, printed before the sweep starts."""
import os
import threading
import time

import numpy as np

from ..errors import FastffError
from ..record import RunDir
from ..sweeps import finished, kernel_threads, run_names


def remaining(points, runs_dir):
    """[(point, updates left)] of the runs not finished in ``runs_dir`` (an unfinished run
    counts from its last evaluation, where its checkpoint is at least)."""
    out = []
    for point, name in zip(points, run_names(points, runs_dir)):
        run_dir = runs_dir / name
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


def step_seconds(sizes, batch_size, threads, seconds=1.0, together=None, rounds=5):
    """Seconds per training step (statistics on) of a ``sizes`` net at ``batch_size`` with
    ``threads`` kernel threads, timed here on random data after a warm-up (and, with a
    ``together`` barrier, once every process sharing it has warmed up too): the median of
    ``rounds`` rounds over ``seconds`` in all (a shared machine's quick moments are not what a
    run of hours sees)."""
    from ..model import MLP
    model = MLP(sizes, activation="tanh", init="normalized")
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch_size)
    stats = model.new_stats()
    with kernel_threads(threads):
        for _ in range(5):
            model.step(x, y, 1e-3, stats)
        if together is not None:
            try:
                together.wait(timeout=120)
            except threading.BrokenBarrierError:  # a worker that never came: time alone
                pass
        times = []
        for _ in range(max(1, rounds)):
            n, t0 = 0, time.perf_counter()
            while n < 1 or time.perf_counter() - t0 < seconds / max(1, rounds):
                model.step(x, y, 1e-3, stats)
                n += 1
            times.append((time.perf_counter() - t0) / n)
        return float(np.median(times))


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


def _seconds_per(fn, seconds=0.5):
    """Seconds per call of ``fn``, timed for about ``seconds`` after one call to warm up."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def side_costs(sizes, threads, seconds=0.5):
    """What a run spends beside its steps, timed here with ``threads`` kernel threads: seconds
    per evaluated example (the forward pass of an evaluation, in blocks of 1000), per monitor
    snapshot without and with the Jacobians (on the 300 examples of the monitor set), and per
    checkpoint written (parameters and history). Returns a dict."""
    import tempfile
    from .. import config
    from ..model import MLP
    from ..monitor import Monitor
    from ..record import RunDir
    model = MLP(list(sizes), activation="tanh", init="normalized")
    rng = np.random.default_rng(0)
    n = config.MONITOR_EXAMPLES
    x = rng.random((1000, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], 1000)
    monitor = Monitor(x[:n], y[:n])
    with kernel_threads(threads), tempfile.TemporaryDirectory() as tmp:
        record = RunDir(tmp)
        return dict(
            example=_seconds_per(lambda: model.error(x, y), seconds) / len(x),
            snapshot=_seconds_per(lambda: monitor(model, jacobian=False), seconds),
            jacobian=_seconds_per(lambda: monitor(model, jacobian=True), seconds),
            checkpoint=_seconds_per(lambda: record.save_checkpoint(
                model, 1, [dict(update=1)]), seconds))


def run_seconds(point, updates, step, costs, eval_rows, setup=0.0):
    """Seconds one run (``updates`` of it left) takes: its updates (``step`` seconds each),
    evaluations (each on ``eval_rows`` examples, with a checkpoint), monitor snapshots (the
    Jacobians at update 0 only, as the reproduction measures them) and its ``setup``."""
    n = int(point["updates"])
    start = n - updates
    every = max(1, int(point["eval_every"]))
    evals = n // every - start // every + (start == 0) + (n % every != 0)
    monitor_every = int(point.get("monitor_every") or 0)
    snapshots = 0
    if monitor_every:
        snapshots = n // monitor_every - start // monitor_every + (n % monitor_every != 0)
    jacobian = costs["jacobian"] if start == 0 and monitor_every else 0.0  # update 0's
    return (updates * step + setup + evals * (eval_rows * costs["example"] + costs["checkpoint"])
            + snapshots * costs["snapshot"] + jacobian)


# the keys of a point that make a plain SGD run of its net on its data: what run_overhead times
_PLAIN = ("dataset", "arch", "activation", "init", "lr", "seed", "batch_size", "data_options",
          "data_dir", "dtype")


def _plain_run(point, updates):
    """train() arguments of a plain SGD run of ``point``'s net and data, ``updates`` long,
    evaluated at its start and end only and not monitored."""
    return dict({k: point[k] for k in _PLAIN if k in point}, updates=updates,
                eval_every=updates, monitor_every=0)


# run_overhead's short runs: updates of the warm-up and first timed run, of the second
_SHORT = (100, 1100)


def run_overhead(point, sizes, threads, eval_rows, short=_SHORT):
    """What a real run of ``point`` spends beside the bare step and its evaluations, timed here
    with ``threads`` kernel threads on plain SGD runs of its net and data (:func:`_plain_run`):
    one of ``short[0]`` updates to warm up, then ``short[0]`` and ``short[1]`` updates, so that
    the last two differ by their updates alone.

    Returns
    -------
    dict
        ``update``: seconds per update beside the bare step (the data stream, the statistics'
        bookkeeping, the training loop); ``setup``: seconds per run beside its updates and
        evaluations (the datasets, the model, the record); ``warm``: seconds of the warm run of
        ``short[0]`` updates (:func:`first_run_seconds` compares a fresh process's with it).
    """
    import tempfile
    from ..training import train
    step = step_seconds(list(sizes), int(point.get("batch_size", 10)), threads)
    costs = side_costs(sizes, threads)
    seconds = []
    with kernel_threads(threads), tempfile.TemporaryDirectory() as tmp:
        for i, n in enumerate((short[0],) + tuple(short)):
            t0 = time.perf_counter()
            train(**_plain_run(point, n), out_dir=os.path.join(tmp, str(i)), progress=False)
            seconds.append(time.perf_counter() - t0)
    _, t1, t2 = seconds
    update = max(step, (t2 - t1) / (short[1] - short[0]))
    evals = 2 * (eval_rows * costs["example"] + costs["checkpoint"])
    return dict(update=update - step, setup=max(0.0, t1 - short[0] * update - evals), warm=t1)


_FIRST_RUN = """
import sys, time, tempfile
t0 = time.perf_counter()
import json, fastff
point = json.loads(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    fastff.train(**point, out_dir=tmp, progress=False)
print(time.perf_counter() - t0)
"""


def first_run_seconds(point, warm, updates):
    """Seconds a fresh process's first run of ``point`` (:func:`_plain_run`, ``updates`` long)
    spends beyond ``warm``, the same run's seconds in a warm process: its imports and the
    compiled kernels it loads, which each of a sweep's workers pays once."""
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _FIRST_RUN,
                          json.dumps(_plain_run(point, updates), default=str)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return 0.0  # the estimate goes on without it; the sweep will say what is wrong
    return max(0.0, float(out.stdout.split()[-1]) - warm)


def _eval_rows(point, budget):
    """Examples a run of ``point`` evaluates each time: its validation and test sets."""
    from .glorot2010 import EVAL_ROWS
    return (sum(budget.shapeset_sizes) if point["dataset"] == "shapeset" and budget
            else EVAL_ROWS.get(point["dataset"], 0))


def makespan(durations, workers):
    """The wall time of ``durations`` on ``workers`` workers, each run to the least-loaded
    worker, longest first (as a sweep's workers take the next run when one finishes)."""
    loads = [0.0] * max(1, workers)
    for d in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += d
    return max(loads)


def seed_runs(points, runs_dir, counts):
    """The runs a budget's ``chosen_seeds`` will add (the chosen rates are not known yet, the
    number of runs is): one (point, updates) per seed left, a seed-0 point standing in for
    its rate, less the extra seeds already finished in ``runs_dir/runs.csv``."""
    import csv
    from .glorot2010 import SEEDED_MODELS, model_of, with_seed
    done = {}
    table = runs_dir / "runs.csv"
    if table.is_file():
        with open(table, newline="") as f:
            for r in csv.DictReader(f):
                if r.get("status") in ("done", "diverged") and r.get("seed") not in ("", "0"):
                    model = model_of(r)
                    if model is not None:
                        key = (r["dataset"], model.name)
                        done[key] = done.get(key, 0) + 1
    out, seen = [], set()
    for p in points:
        model = model_of(p)
        key = (p["dataset"], model.name if model else None)
        if model is None or model.name not in SEEDED_MODELS or key in seen or p["seed"] != 0:
            continue
        seen.add(key)
        left = max(0, counts.get(p["dataset"], 1) - 1 - done.get(key, 0))
        out += [(with_seed(p, s + 1), int(p["updates"])) for s in range(left)]
    return out


def arrangements(cores):
    """(workers, kernel threads each) to try on ``cores`` cores: one worker per core, and one
    worker with every core (two nets' weights may not fit the shared cache together)."""
    return list(dict.fromkeys([(cores, 1), (1, cores)]))


def estimate(points, runs_dir, shapes, workers=None, budget=None, widen=0):
    """The text printed before a reproduction starts: runs and updates left, the step and what
    a run spends beside it (evaluations, monitoring, checkpoints per net; the training loop
    around the step and each run's setup, from short real runs once a dataset; a worker's first
    run) measured here, and the hours on the fastest arrangement of workers and threads
    measured (or on ``workers``).

    Parameters
    ----------
    points : list of dict
        The reproduction's train() arguments.
    runs_dir : pathlib.Path
        Where the runs are (finished ones are not counted).
    shapes : dict
        Dataset -> (inputs, classes).
    workers : int, optional
        Worker processes (default: the faster of one per core and one with every core, timed).
    budget : Budget, optional
        For the evaluation sets' sizes and the chosen rates' seeds (counted: their number is
        known before the rates are).
    widen : int
        Rounds of widening that may follow: they depend on the results, so the hours are
        given without them, and beside them with one more run per model and dataset.

    Returns
    -------
    (text, hours, workers)
    """
    from ..arch import parse_sizes
    left = remaining(points, runs_dir)
    seeds = seed_runs(points, runs_dir, budget.chosen_seeds) if budget is not None and \
        budget.chosen_seeds else []
    cores = os.cpu_count() or 1
    tried = arrangements(cores) if workers is None else \
        [(max(1, min(cores, workers)), max(1, cores // max(1, min(cores, workers))))]
    if not left and not seeds:
        return f"all {len(points)} runs are finished", 0.0, tried[0][0]

    def sizes_of(point):
        return tuple(parse_sizes(point["arch"], *shapes[point["dataset"]]))

    # widening's runs depend on the results: counted apart, one rung per model and dataset
    rungs = list({(p["dataset"], p["arch"], p["activation"], p["init"]): (p, int(p["updates"]))
                  for p in points if p.get("seed", 0) == 0}.values()) if widen else []
    nets = {(sizes_of(p), int(p.get("batch_size", 10))) for p, _ in left + seeds + rungs}

    # a real run beside its step, timed once a dataset on its first run's net (the loop's
    # Python and the data stream do not scale with the kernel threads); a worker's first run
    probes = {p["dataset"]: p for p, _ in reversed(left + seeds)}  # each dataset's first
    overhead = {d: run_overhead(p, sizes_of(p), cores, _eval_rows(p, budget))
                for d, p in probes.items()}
    dataset, probe = next(iter(probes.items()))
    first = first_run_seconds(probe, overhead[dataset]["warm"], _SHORT[0])
    results = []
    for n_workers, threads in tried:
        steps = {(s, b): (step_seconds(list(s), b, threads) if n_workers == 1
                          else steps_at_once(s, b, threads, n_workers)) for s, b in nets}
        costs = {s: side_costs(s, threads) for s in {s for s, _ in nets}}

        def seconds(point, updates):
            sizes = sizes_of(point)
            extra = overhead.get(point["dataset"], dict(update=0.0, setup=0.0))
            step = steps[(sizes, int(point.get("batch_size", 10)))] + extra["update"]
            return run_seconds(point, updates, step, costs[sizes], _eval_rows(point, budget),
                               extra["setup"])

        durations = [seconds(p, u) for p, u in left + seeds]
        widened = durations + [seconds(p, u) for p, u in rungs]
        results.append(((makespan(durations, n_workers) + first) / 3600, n_workers, threads,
                        steps, (makespan(widened, n_workers) + first) / 3600))
    best = min(results, key=lambda r: r[0])
    text = _summary(points, left, seeds, best, results, overhead, first)
    if widen:
        text += (f"; widening adds a run per model where a chosen rate sits at its grid's edge "
                 f"(up to {widen} rounds): with one each, about {best[4]:.1f} h")
    return text, best[0], best[1]


def _summary(points, left, seeds, best, results, overhead, first):
    """estimate()'s text: what is left, what was timed, and the hours of ``best`` (hours,
    workers, threads, steps, hours with widening), the other ``results``' hours beside."""
    hours, n_workers, threads, steps, _ = best
    timed = "; ".join(f"{'-'.join(map(str, s))} at batch {b}: {1e3 * t:.2f} ms"
                      for (s, b), t in steps.items())
    alone = "alone" if n_workers == 1 else f"{n_workers} workers stepping at once"
    others = "".join(f"; {w} worker{'s' * (w > 1)} of {t} thread{'s' * (t > 1)}: {h:.1f} h"
                     for h, w, t, _, _ in results if w != n_workers)
    text = (f"estimate: {len(left)} of {len(points)} runs to train, "
            f"{sum(u for _, u in left):,} updates"
            + (f", and {len(seeds)} runs of the chosen rates' seeds" if seeds else "")
            + f"; the step timed here ({threads} thread{'s' * (threads > 1)}, {alone}): "
            f"{timed}; with evaluations, monitoring and checkpoints, the training loop and "
            f"each run's setup (short real runs timed: "
            + ", ".join(f"{d} {1e3 * o['update']:.2f} ms an update, {o['setup']:.1f} s a run"
                        for d, o in overhead.items())
            + f") and a worker's first run ({first:.0f} s), on {n_workers} worker"
            f"{'s' * (n_workers > 1)}: about {hours:.1f} h{others}")
    return text
