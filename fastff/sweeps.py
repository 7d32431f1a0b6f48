"""Grids of runs on Dask: one code path from a laptop to a cluster.

``fastff.sweep(grid, out_dir)`` trains one ordinary run directory per point of a grid over any
:func:`fastff.train` arguments and keeps ``out_dir/runs.csv``, one row per run: its
configuration, status (``done``, ``diverged``, ``failed``), final validation and test error,
updates done and seconds. Without a scheduler the runs go to a ``distributed.LocalCluster`` of
worker processes, sized so that workers x kernel threads never exceed the cores; with a
scheduler address (or a ``distributed.Client``) to any Dask cluster.

* Run again, a sweep skips finished runs (done or diverged) and resumes the others from their
  checkpoints.
* When the workers can see ``out_dir`` (checked with a marker file), they train straight into it
  and checkpoint there, so a run whose worker died resumes from its last checkpoint on another
  worker (Dask retries the task). Otherwise each worker trains in a folder of its own and the
  files come back with the result, and the client writes the run directory.
* A diverged or failed run is a row of runs.csv, never the end of the sweep.
"""
import contextlib
import csv
import hashlib
import inspect
import io
import itertools
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from . import config
from .checks import positive
from .data.shapeset import GENERATOR_BEFORE
from .errors import DivergenceError, FastffError, InputError
from .files import atomic_write_bytes
from .flags import Flag
from .record import RunDir
from .training.signals import Interrupted, StopRequests

# train() arguments a sweep sets itself
_OWN = ("out_dir", "progress", "resume", "overwrite")
# a run's result, beside its configuration (whose ``updates`` is the number asked for)
RESULT_COLUMNS = ("status", "valid_error", "test_error", "updates_done", "seconds",
                  "resumed_from", "message")


def _train_arguments():
    from .training import train
    return [p for p in inspect.signature(train).parameters if p not in _OWN]


def expand(grid):
    """The points of a grid: a dict of ``train`` arguments, each a value or a list of values
    (every combination, in the order the keys are given), or a list of such dicts (their
    points one after another). Returns a list of dicts."""
    if isinstance(grid, list):
        if not grid:
            raise InputError("a sweep grid is a non-empty dict of train() arguments, or a "
                             "non-empty list of them")
        return [p for g in grid for p in expand(g)]
    if not isinstance(grid, dict) or not grid:
        raise InputError("a sweep grid is a non-empty dict of train() arguments, or a "
                         "non-empty list of them")
    valid = _train_arguments()
    unknown = [k for k in grid if k not in valid]
    if unknown:
        raise InputError(f"unknown train() argument{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)} in the grid; valid: {', '.join(valid)}")
    axes = [(k, v if isinstance(v, list) else [v]) for k, v in grid.items()]
    for k, values in axes:
        if not values:
            raise InputError(f"grid axis {k!r} is empty")
    return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*(v for _, v in axes))]


def check_points(points):
    """Every point through the checks of :func:`fastff.train` (its options' values and its
    architecture) before anything runs; a bad one is an InputError naming the point. The
    device is not resolved here: the runs may go to a cluster's GPUs that this machine lacks."""
    from .arch import parse_hidden
    from .training import options
    for n, point in enumerate(points, start=1):
        try:
            parse_hidden(point.get("arch", "1000x5"))
            options.check({k: v for k, v in point.items() if k != "arch"})
        except InputError as exc:
            shown = json.dumps(point, sort_keys=True, default=str)
            raise InputError(f"grid point {n} of {len(points)} ({shown}): {exc}") from None


def varying(points):
    """The arguments whose values differ between points, in first-seen order."""
    keys = list(dict.fromkeys(k for p in points for k in p))
    text = lambda v: json.dumps(v, sort_keys=True, default=str)  # noqa: E731
    return [k for k in keys if len({text(p.get(k)) for p in points}) > 1]


def identity(point):
    """What names a point and matches it with a finished run: the point, as JSON values, less a
    Shapeset stream given as the one records that name none were drawn from (``sequential``),
    so that the runs of a sweep planned before its points named their stream still match."""
    point = json.loads(json.dumps(point, default=str))
    if not isinstance(point, dict):
        return point
    options = point.get("data_options")
    if isinstance(options, dict) and options.get("generator") == GENERATOR_BEFORE:
        point["data_options"] = {k: v for k, v in options.items() if k != "generator"}
    return point


def run_name(point, keys):
    """A folder name for one point: the values of the varying arguments, and a short hash of
    the whole point (so two points never share a folder)."""
    text = json.dumps(identity(point), sort_keys=True)
    # scalar values only: the hash tells points apart whose dicts or lists differ
    slug = ",".join(f"{k}={point[k]}" for k in keys
                    if k in point and not isinstance(point[k], (dict, list)))
    slug = "".join(c if c.isalnum() or c in "=,.-_" else "_" for c in slug)[:120]
    return f"{slug or 'run'}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def finished(run_dir, point):
    """The result row of a run directory that already finished (done, or diverged), else None."""
    status_file = Path(run_dir) / "sweep_status.json"
    if not status_file.is_file():
        return None
    try:
        row = json.loads(status_file.read_text())
    except (OSError, ValueError):
        return None
    return row if identity(row.get("point")) == identity(point) else None


@contextlib.contextmanager
def kernel_threads(threads):
    """Numba's kernels and the BLAS on ``threads`` threads inside the block, as a sweep's worker
    runs them, and back as they were after."""
    import numba
    from threadpoolctl import threadpool_limits
    from .kernels.cpu.blas import library
    library()  # loads the products' BLAS first: threadpoolctl limits only what is loaded
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        with threadpool_limits(threads):
            yield
    finally:
        numba.set_num_threads(before)


def _run(points, run_dirs, threads, shared):
    """Train a pack of points (on a worker) with :func:`fastff.train_many`: one after another
    on the CPU, in lockstep on a GPU. Returns each point's result row and, when the client
    cannot see the worker's files, its run directory's files as bytes."""
    from .training import train_many
    works = [Path(d) if shared else Path(tempfile.mkdtemp(prefix="fastff-sweep-"))
             for d in run_dirs]
    try:
        configs, rows = [], []
        for point, work in zip(points, works):
            resume = RunDir(work).holds_run() and (work / "checkpoint.npz").is_file()
            resumed_from = 0
            if resume:
                try:
                    resumed_from = RunDir(work).load_checkpoint()[1]
                except FastffError:  # a damaged checkpoint: start the run again
                    resume = False
            configs.append(dict(point, out_dir=work, progress=False, resume=resume,
                                overwrite=not resume and RunDir(work).holds_run()))
            rows.append(dict(status="done", message="", resumed_from=resumed_from))
        t0 = time.perf_counter()
        try:
            with kernel_threads(threads):
                results = train_many(configs, errors="return")
        except Interrupted:
            raise
        except Exception as exc:  # a failed pack is rows, never the end of the sweep
            results = [exc] * len(points)
        seconds = round(time.perf_counter() - t0, 3)
        out = []
        for point, work, row, result in zip(points, works, rows, results):
            if isinstance(result, DivergenceError):
                row.update(status="diverged", message=str(result).splitlines()[0])
                last = (RunDir(work).load_checkpoint()[2][-1]
                        if (work / "checkpoint.npz").is_file() else {})
            elif isinstance(result, Exception):
                row.update(status="failed",
                           message=f"{type(result).__name__}: {result}".splitlines()[0])
                last = {}
            else:
                last = result.final
            row.update(valid_error=last.get("valid_error", ""),
                       test_error=last.get("test_error", ""),
                       updates_done=last.get("update", ""), seconds=seconds)
            if row["status"] != "failed":
                atomic_write_bytes(work / "sweep_status.json",
                                   json.dumps({**row, "point": point}, default=str).encode())
            files = None if shared else {p.name: p.read_bytes() for p in work.iterdir()
                                         if p.is_file()}
            out.append((row, files))
        return out
    finally:
        if not shared:
            for work in works:
                shutil.rmtree(work, ignore_errors=True)


def packs(todo, size):
    """``todo`` (name, point) cut into packs of at most ``size`` points for one task each:
    points on a GPU, those of one net and batch size side by side (train_many steps them in
    one launch); every other point alone."""
    def gpu(point):
        return str(point.get("device", "cpu")) == "cuda"

    def shape(item):
        point = item[1]
        return tuple(str(point.get(k, "")) for k in ("dataset", "arch", "activation",
                                                     "batch_size", "dtype", "loss"))

    on_gpu = sorted((t for t in todo if gpu(t[1])), key=shape)
    out = [[t] for t in todo if not gpu(t[1])]
    out += [on_gpu[i:i + size] for i in range(0, len(on_gpu), size)]
    return out


def pack_size(runs, workers, pack=None):
    """Runs a task trains together on a GPU: ``pack`` if given, else at most
    ``config.SWEEP_GPU_PACK``, the runs spread evenly over the rounds of packs each of
    ``workers`` must run anyway (a GPU left idle costs more than a smaller lockstep:
    benchmarks/gpu_model.py). No workers known yet (an external scheduler whose workers have
    not joined): ``config.SWEEP_GPU_PACK``."""
    if pack is not None:
        return pack
    if workers < 1 or runs < 1:
        return config.SWEEP_GPU_PACK
    rounds = -(-runs // (config.SWEEP_GPU_PACK * workers))
    return -(-runs // (workers * rounds))


def _client(scheduler, workers, gpus=False):
    """(client, cluster we started or None, kernel threads per worker). Runs on GPUs get one
    worker per GPU (dask-cuda's LocalCUDACluster where installed)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise FastffError("sweeps run on Dask: pip install 'fastff[sweep]'") from None
    if scheduler is not None and not isinstance(scheduler, str):
        return scheduler, None, 1  # a distributed.Client
    if scheduler is not None:
        return Client(scheduler), None, 1
    cores = os.cpu_count() or 1
    if gpus:
        n = _gpu_count() if workers is None else workers
        with _worker_malloc():
            cluster = gpu_cluster(n)
        return Client(cluster), cluster, max(1, cores // n)
    n = max(1, min(cores, workers or cores))
    with _worker_malloc():
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
    return Client(cluster), cluster, max(1, cores // n)


def _worker_malloc():
    """Dask configuration under which a local cluster's workers start with this process's own
    ``malloc`` settings. Dask's nannies set ``MALLOC_TRIM_THRESHOLD_`` before a worker starts,
    which also fixes glibc's ``mmap`` threshold at 128 KiB: every evaluation block and monitor
    array then comes from a fresh ``mmap``, a page fault per 4 KiB on every call
    (benchmarks/NOTES.md, "Page faults in Dask workers")."""
    import dask
    return dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


def _gpu_count():
    from .device import resolve
    resolve("cuda")  # a clear DeviceError where there is none
    import cupy
    return int(cupy.cuda.runtime.getDeviceCount())


def gpu_cluster(n):
    """A local Dask cluster of ``n`` worker processes, worker i seeing GPU i alone
    (CUDA_VISIBLE_DEVICES): dask-cuda's ``LocalCUDACluster`` where it is installed, else a
    ``SpecCluster`` of nannies that set the variable."""
    n = positive("workers", n, integer=True)
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        pass
    else:
        return LocalCUDACluster(CUDA_VISIBLE_DEVICES=list(range(n)), threads_per_worker=1,
                                dashboard_address=":0")
    from distributed import Nanny, Scheduler, SpecCluster
    workers = {f"gpu-{i}": {"cls": Nanny, "options": {
        "nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": str(i)}}} for i in range(n)}
    return SpecCluster(workers=workers, scheduler={"cls": Scheduler,
                                                   "options": {"dashboard_address": ":0"}})


# The keywords of sweep() as the ``fastff sweep`` command's flags (fastff.flags)
SCHEDULER_FLAG = Flag("scheduler", "address of a Dask scheduler (default: a LocalCluster here)")
WORKERS_FLAG = Flag("workers", "LocalCluster worker processes (default: one per core)",
                    cli=dict(type=int))
SWEEP_FLAGS = (
    Flag("out_dir", "sweep directory: one run folder per point", flag="--out",
         cli=dict(required=True, metavar="OUT")),
    SCHEDULER_FLAG, WORKERS_FLAG,
    Flag("progress", "no progress lines", flag="--quiet", invert=True),
    Flag("pack", "runs on GPUs trained together by one task (fastff.train_many; default: "
         "enough packs for every worker)", cli=dict(type=int)),
)


def sweep(grid, out_dir, scheduler=None, *, workers=None, progress=True, pack=None):
    """Train every point of ``grid`` and record them in ``out_dir`` (see the module docstring).

    Parameters
    ----------
    grid : dict or list of dict
        :func:`fastff.train` arguments, each a value or a list of values (every combination);
        or a list of such dicts, whose points are swept together.
    out_dir : str or Path
        One run directory per point, and ``runs.csv``.
    scheduler : str or distributed.Client, optional
        A Dask scheduler address or client; default: a LocalCluster of worker processes.
    workers : int, optional
        Worker processes of the LocalCluster (default: one per core; each worker's kernels get
        cores / workers threads).
    progress : bool
        One line per finished run and an overall bar.
    pack : int, optional
        Runs with ``device="cuda"`` trained together by one task with
        :func:`fastff.train_many` (default: :func:`pack_size`, at most
        ``config.SWEEP_GPU_PACK`` and small enough that every worker gets a pack); other runs
        go one a task. Without a scheduler, runs on GPUs get a cluster of one worker per GPU.

    Returns
    -------
    list of dict
        The rows of runs.csv.
    """
    points = expand(grid)
    check_points(points)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    names, rows = _finished_rows(points, out)
    todo = [(name, point) for name, point in zip(names, points) if name not in rows]
    _write_table(out, names, points, rows)
    if not todo:
        return _table_rows(names, points, rows)
    pack = None if pack is None else positive("pack", pack, integer=True)
    gpu_runs = sum(str(point.get("device", "cpu")) == "cuda" for _, point in todo)
    client, cluster, threads = _client(scheduler, workers, gpu_runs > 0)
    size = pack_size(gpu_runs, len(client.nthreads()), pack)
    marker = out / f".fastff-sweep-{uuid.uuid4().hex}"
    marker.write_text("")
    try:
        with StopRequests():  # Ctrl-C or SIGTERM: an Interrupted here, at once
            _gather(client, packs(todo, size), out, names, points, rows, threads, marker,
                    progress)
    except Interrupted as exc:
        done = sum(1 for r in rows.values() if r.get("status") in ("done", "diverged"))
        raise Interrupted(f"sweep interrupted: {done} of {len(points)} runs finished; run the "
                          "same command again to continue the others, each from its last "
                          "checkpoint", exc.signum) from None
    finally:
        marker.unlink(missing_ok=True)
        if cluster is not None:
            client.close()
            cluster.close()
    return _table_rows(names, points, rows)


def _gather(client, todo, out, names, points, rows, threads, marker, progress):
    """Submit the packs of unfinished runs and record each run as its pack finishes."""
    shared = all(client.run(os.path.exists, str(marker.resolve())).values())
    futures = {}
    for pack in todo:
        key = f"fastff-run-{pack[0][0]}" + (f"-and-{len(pack) - 1}" if len(pack) > 1 else "")
        future = client.submit(_run, [p for _, p in pack],
                               [str((out / n).resolve()) for n, _ in pack], threads, shared,
                               key=key, pure=False)
        futures[future] = [n for n, _ in pack]
    bar = _bar(progress, len(points), len(points) - sum(map(len, todo)))
    started, updates = time.perf_counter(), 0
    from distributed import as_completed
    for future in as_completed(futures):
        pack = futures[future]
        try:
            results = future.result()
        except Exception as exc:  # the task itself was lost (every retry)
            results = [(dict(status="failed", message=f"{type(exc).__name__}: {exc}",
                             valid_error="", test_error="", updates_done="", seconds="",
                             resumed_from=""), None)] * len(pack)
        for name, (row, files) in zip(pack, results):
            if files:
                _receive(out / name, files)
            rows[name] = row
            if progress:
                err = row["test_error"]
                err = f"{100 * err:.2f}%" if isinstance(err, float) else "n/a"
                bar.write(f"{row['status']:>8} {name}: test error {err} "
                          f"({row['updates_done']} updates, {row['seconds']} s)")
                if isinstance(row["updates_done"], int):
                    updates += row["updates_done"] - (row.get("resumed_from") or 0)
                bar.set_postfix_str(f"{updates / (time.perf_counter() - started):,.0f} upd/s")
                bar.update(1)
        _write_table(out, names, points, rows)
    if progress:
        bar.close()


def _receive(run_dir, files):
    """Write the files of a run that came back from a worker (replacing the folder's run)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    RunDir(run_dir).clear()
    for name, data in files.items():
        atomic_write_bytes(run_dir / name, data)


def collect(grid, out_dir):
    """The rows :func:`sweep` would return for ``grid`` in ``out_dir``, training nothing:
    finished runs (done or diverged) with their results, the others with an empty status."""
    points = expand(grid)
    names, rows = _finished_rows(points, Path(out_dir))
    return _table_rows(names, points, rows)


def run_names(points, out):
    """Each point's run folder in ``out``: :func:`run_name` with the sweep's varying keys, or
    the folder a run of the same point already has there under another name (the hash of the
    whole point is its name's end). A sweep that gains a varying key (more seeds, another
    dataset) renames its points, and so finds its finished and half-trained runs by their
    hash: a finished one first, then the folder of the new name, then any other."""
    names = [run_name(p, varying(points)) for p in points]
    out = Path(out)
    by_hash = {}
    if out.is_dir():
        for d in sorted(out.iterdir()):
            if d.is_dir() and "-" in d.name:
                by_hash.setdefault(d.name.rsplit("-", 1)[1], []).append(d.name)
    resolved = []
    for name, point in zip(names, points):
        same = by_hash.get(name.rsplit("-", 1)[1], [])
        candidates = ([name] if name in same else []) + [n for n in same if n != name]
        done = [n for n in candidates if finished(out / n, point) is not None]
        resolved.append(done[0] if done else name if name in same or not same else same[0])
    return resolved


def _finished_rows(points, out):
    """Each point's run name, and the result rows of those already finished in ``out``."""
    names = run_names(points, out)
    rows = {}
    for name, point in zip(names, points):
        done = finished(out / name, point)
        if done is not None:
            rows[name] = {k: done.get(k, "") for k in RESULT_COLUMNS}
    return names, rows


def _table_rows(names, points, rows):
    keys = list(dict.fromkeys(k for p in points for k in p))
    return [dict(name=n, **{k: p.get(k, "") for k in keys},
                 **{k: (rows.get(n) or {}).get(k, "") for k in RESULT_COLUMNS})
            for n, p in zip(names, points)]


def _write_table(out, names, points, rows):
    table = _table_rows(names, points, rows)
    for row in table:
        if not row["status"]:
            row["status"] = "pending"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (dict, list)) else v
                      for k, v in row.items()} for row in table)
    atomic_write_bytes(out / "runs.csv", buf.getvalue().encode())


def _bar(enabled, total, initial):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="run", disable=not enabled, dynamic_ncols=True)
