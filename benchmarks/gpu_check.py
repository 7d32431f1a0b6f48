"""Verify and time fastff's CUDA backend on this machine's GPU, in one command that cannot
waste a GPU window.

Run: ``python benchmarks/gpu_check.py --out DIR`` on a machine with an NVIDIA GPU (sm_80 or
newer), CuPy and, for the baselines, PyTorch; no network needed. Each part runs in a process of
its own with its own timeout (a hung kernel loses that part, not the others), within
``--budget`` seconds in all, and DIR/gpu_check.json and DIR/gpu_check.md are written again
after every part. The parts, correctness first:

1. ``tests``: the ``cuda`` tests (``pytest -m cuda``), their summary line;
2. ``correctness``: three steps of the paper's net (1024-1000x5-9, tanh, float32, statistics
   on) on every path at batch 10, 128 and 1024, at the launch geometry the GPU gives (the
   persistent step's grid is recorded), against the float64 NumPy reference from the same
   weights and batches: the weights' changes and the losses must agree (TF32 at its own
   tolerance);
3. ``barrier``: the grid barrier alone (``barrier_rounds``: 0 and 12 barriers in one
   cooperative launch at the persistent step's grid), its cost per barrier;
4. ``phases``: a profiling build of the persistent step (``config.CUDA_PROFILE_STEP``) at
   batch 10: how long each of its 2 L phases takes, barrier included (the GPU's clock, block 0);
5. ``fastff``: the step's time on each path with CUDA events (the persistent step one launch a
   step and 100 steps a launch; the layer-by-layer kernels in a CUDA graph, launched one by
   one, and in TF32 on tensor cores): warm-up, then the median of several repeats;
6. ``host_time``: the host's time per step call on each path (what Python and the launch cost);
7. ``torch``: PyTorch's step of the same net, eager and captured in a CUDA graph;
8. ``shapeset``: Shapeset-3x2 drawn on the GPU; ``lockstep``: ``train_many``'s lockstep of 1
   to 64 copies of the paper's net;
9. ``long_run``: the paper's Shapeset run for ``--updates`` updates, extrapolated to 5 million.

It exits with status 0 when every part ran and passed, 1 when one failed, timed out or was
left out for lack of time, and 2 (having timed nothing) without a usable GPU. ``--dry-run``
runs the same control flow without a GPU (the CPU kernels against the reference in place of
the GPU's, the timings as stand-ins): the tests check with it that a failing part, a hanging
part and the results written after each part behave as they must.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare_step import PAPER_SIZES, processor, torch_step  # noqa: E402

BATCHES = (10, 128, 1024)
TARGETS_US = {10: 25.0, 128: 100.0, 1024: 650.0}
NO_GPU_STATUS = 2
FAILED_STATUS = 1
# (part, its timeout in seconds), in the order they run: correctness before any timing
PARTS = (("tests", 240), ("correctness", 150), ("barrier", 45), ("phases", 90),
         ("fastff", 150), ("host_time", 60), ("torch", 90),
         ("shapeset", 45), ("lockstep", 90), ("long_run", 240))
# Tolerances of the correctness part: a weight's change over three steps against the float64
# reference's, relative to the largest change (float32 sums of 1000 terms; TF32 rounds operands
# to 10 bits), and the losses
WEIGHT_TOLERANCE = {"float32": 2e-3, "tf32": 3e-2}
LOSS_TOLERANCE = {"float32": 1e-4, "tf32": 1e-2}
DRY_SIZES = [64, 48, 48, 7]  # the dry run's net: the paper's shape, small


def gpu_info():
    """(ok, description or the reason there is no GPU)."""
    from fastff.device import cuda_status
    ok, reason = cuda_status()
    if not ok:
        return False, reason
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return True, dict(name=name, sms=props["multiProcessorCount"],
                      capability=f"{props['major']}.{props['minor']}",
                      memory_gb=round(props["totalGlobalMem"] / 2**30, 1),
                      l2_mb=round(props["l2CacheSize"] / 2**20, 1),
                      driver=cupy.cuda.runtime.driverGetVersion(),
                      runtime=cupy.cuda.runtime.runtimeGetVersion(), cupy=cupy.__version__)


def run_tests(args):
    """``pytest -m cuda`` on the repository's tests; its summary line and status."""
    if args.dry_run:
        return dict(status=0, summary="dry run: no tests", ok=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rfE", "-p", "no:cacheprovider",
           str(HERE.parent / "tests")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    return dict(status=proc.returncode, summary=lines[-1] if lines else "",
                failures=[l for l in lines if l.startswith(("FAILED", "ERROR"))][:40],
                tail=proc.stdout[-3000:] + proc.stderr[-2000:], ok=proc.returncode == 0)


# The config values every path starts from (and the check restores after each).
DEFAULT_PATH = dict(CUDA_STEP_PATH="auto", CUDA_GRAPH=True, CUDA_SPLIT_TF32=False,
                    CUDA_FUSED_BACKWARD=True)


def _paths(batch, device):
    """(label, config values, tf32) of every path at ``batch``: the values it sets beyond
    :data:`DEFAULT_PATH`."""
    from fastff import config
    if device == "cpu":
        return [("cpu", {}, False)]
    layers = dict(CUDA_STEP_PATH="layers")
    paths = [("layers", layers, False),
             ("layers, no graph", dict(layers, CUDA_GRAPH=False), False),
             ("layers, a layer at a time", dict(layers, CUDA_FUSED_BACKWARD=False), False),
             ("layers, 3xTF32", dict(layers, CUDA_SPLIT_TF32=True), False),
             ("layers, tf32", layers, True)]
    if batch <= config.CUDA_STEP_MAX_BATCH:
        paths.insert(0, ("persistent", dict(CUDA_STEP_PATH="persistent"), False))
    return paths


def _set_path(values=None):
    """Make the next steps take the path of config ``values`` (:data:`DEFAULT_PATH` for the
    rest; none: the default path)."""
    from fastff import config
    for name, value in dict(DEFAULT_PATH, **(values or {})).items():
        setattr(config, name, value)


def check_correctness(args, steps=3):
    """Three steps on every path against the float64 reference from the same weights and
    batches; a row per (batch, path) with its errors as multiples of the tolerance."""
    import numpy as np
    import fastff
    sizes, device = (DRY_SIZES, "cpu") if args.dry_run else (PAPER_SIZES, "cuda")
    xp = np
    if device == "cuda":
        import cupy as xp
    rows = []
    for batch in BATCHES:
        rng = np.random.default_rng(batch)
        xs = [rng.random((batch, sizes[0]), dtype=np.float32) for _ in range(steps)]
        ys = [rng.integers(0, sizes[-1], batch) for _ in range(steps)]
        ref = fastff.MLP(sizes, activation="tanh", seed=0, dtype="float64", kernels="reference")
        start = [W.copy() for W, _ in ref.params]
        ref_losses = [ref.step(x.astype(np.float64), y, 0.01, ref.new_stats())
                      for x, y in zip(xs, ys)]
        moved = [W - W0 for (W, _), W0 in zip(ref.params, start)]
        scale = max(float(np.abs(m).max()) for m in moved)
        for label, values, tf32 in _paths(batch, device):
            _set_path(values)
            try:
                net = fastff.MLP(sizes, activation="tanh", device=device, seed=0, tf32=tf32)
                stats = net.new_stats()
                losses = [float(net.step(xp.asarray(x), xp.asarray(y), 0.01, stats))
                          for x, y in zip(xs, ys)]
                params = [np.asarray(net.backend.to_host(W), np.float64) for W, _ in net.params]
            finally:
                _set_path()
            kind = "tf32" if tf32 else "float32"  # 3xTF32 is held to float32's tolerance
            weight = max(float(np.abs((W - W0) - m).max()) for W, W0, m in
                         zip(params, start, moved)) / (scale * WEIGHT_TOLERANCE[kind])
            loss = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(losses, ref_losses)) \
                / LOSS_TOLERANCE[kind]
            row = dict(batch=batch, path=label, weight_error=round(weight, 4),
                       loss_error=round(loss, 4), ok=bool(weight <= 1 and loss <= 1))
            launch = getattr(net.plan, "launch", None)
            if values.get("CUDA_STEP_PATH") == "persistent" and launch is not None:
                row["grid"] = launch.grid
            rows.append(row)
    return dict(rows=rows, ok=all(r["ok"] for r in rows),
                tolerances=dict(weight=WEIGHT_TOLERANCE, loss=LOSS_TOLERANCE))


def time_device(fn, steps, repeats):
    """Median microseconds a call of ``fn`` over ``repeats`` runs of ``steps`` calls, timed
    with CUDA events on the current stream (the host's launch cost counts when it is the
    slower side), after a warm-up."""
    import cupy
    for _ in range(3):
        fn()
    cupy.cuda.Device().synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    runs = []
    for _ in range(repeats):
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        end.synchronize()
        runs.append(1e3 * cupy.cuda.get_elapsed_time(start, end) / steps)
    return dict(median_us=round(statistics.median(runs), 2), runs_us=[round(r, 2) for r in runs])


def paper_batch(batch, count=1, seed=0):
    import cupy
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.random((count * batch, PAPER_SIZES[0]), dtype=np.float32)
    y = rng.integers(0, PAPER_SIZES[-1], count * batch)
    return cupy.asarray(x), cupy.asarray(y)


def time_fastff(args):
    """The step on each path at each batch size."""
    steps, repeats = args.steps, args.repeats
    import fastff
    from fastff import config
    from fastff.kernels.cuda.step import StepLaunch
    rows = []
    for batch in BATCHES:
        x, y = paper_batch(batch)
        for label, values, tf32 in _paths(batch, "cuda"):
            _set_path(values)
            net = fastff.MLP(PAPER_SIZES, activation="tanh", device="cuda", seed=0, tf32=tf32)
            stats = net.new_stats()
            n = steps if batch <= 128 else max(10, steps // 10)
            row = dict(batch=batch, path=label, **time_device(
                lambda: net.step_unchecked(x, y, 0.01, stats), n, repeats))
            if values.get("CUDA_STEP_PATH") == "persistent":
                row["grid"] = net.plan.launch.grid
            rows.append(row)
        _set_path()
        if batch <= config.CUDA_STEP_MAX_BATCH:  # 100 steps a launch, batches on the device
            net = fastff.MLP(PAPER_SIZES, activation="tanh", device="cuda", seed=0)
            stats = net.new_stats()
            launch = StepLaunch(net.params, "tanh", batch, net.plan.workspace(batch), stats,
                                "nll")
            xs, ys = paper_batch(batch, 100)
            timed = time_device(lambda: launch.run(xs, ys, 0.01, steps=100), 3, repeats)
            rows.append(dict(batch=batch, path="persistent, 100 steps a launch",
                             median_us=round(timed["median_us"] / 100, 2),
                             runs_us=[round(r / 100, 2) for r in timed["runs_us"]]))
    return rows


def time_torch(args):
    """PyTorch's step of the paper's net, eager and as a CUDA graph."""
    steps, repeats = args.steps, args.repeats
    import torch
    rows = []
    for batch in BATCHES:
        tx = torch.rand(batch, PAPER_SIZES[0], device="cuda")
        ty = torch.randint(0, PAPER_SIZES[-1], (batch,), device="cuda")
        step = torch_step(tx, ty, "cuda")
        net, opt = step.net, step.opt
        n = steps if batch <= 128 else max(10, steps // 10)
        rows.append(dict(batch=batch, path="pytorch eager", **_time_torch(step, n, repeats)))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up off the capture stream, as the docs ask
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            torch.nn.functional.cross_entropy(net(tx), ty).backward()
            opt.step()
        rows.append(dict(batch=batch, path="pytorch cuda graph",
                         **_time_torch(graph.replay, n, repeats)))
    return dict(torch=torch.__version__, rows=rows)


def _time_torch(fn, steps, repeats):
    import torch
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        end.synchronize()
        runs.append(1e3 * start.elapsed_time(end) / steps)
    return dict(median_us=round(statistics.median(runs), 2), runs_us=[round(r, 2) for r in runs])


def long_run(args):
    """The paper's Shapeset run (tanh, normalized init, batch 10, monitoring on) for
    ``updates`` updates, extrapolated to 5 million."""
    updates, out = args.updates, args.out
    import fastff
    t = time.perf_counter()
    run = fastff.train("1000x5", dataset="shapeset", device="cuda", updates=updates,
                       eval_every=max(1, updates // 4), progress=False,
                       out_dir=str(Path(out) / "long_run"), overwrite=True)
    seconds = time.perf_counter() - t
    last = run.history[-1]
    return dict(updates=updates, seconds=round(seconds, 1),
                updates_per_s=round(updates / seconds, 1),
                paper_5M_minutes=round(seconds * 5e6 / updates / 60, 1),
                test_error=last.get("test_error"), train_loss=last.get("train_loss"))


def time_shapeset(args):
    """Shapeset-3x2's counter stream rendered on the GPU: images/s at 1,024 and 65,536 images a
    launch, against what the batch-1024 step at its target consumes (the target: 10x)."""
    repeats = args.repeats
    from fastff.data.shapeset import SCALES, counter_key
    from fastff.kernels.cuda import shapeset as device
    rows = []
    for n in (1024, 65_536):
        out = device.render(counter_key(0, 0), 0, n, False, SCALES["unit"])
        timed = time_device(lambda: device.render(counter_key(0, 0), 0, n, False,
                                                  SCALES["unit"], *out), 5, repeats)
        rows.append(dict(images=n, images_per_s=round(n / (timed["median_us"] * 1e-6)),
                         **timed))
    consumed = 1024 / (TARGETS_US[1024] * 1e-6)
    return dict(rows=rows, step_images_per_s=round(consumed),
                ratio=round(max(r["images_per_s"] for r in rows) / consumed, 1))


def time_lockstep(args):
    """train_many's step: G copies of the paper's net at batch 10 (statistics on) stepped by
    one persistent launch, against one net alone: total updates/s."""
    steps, repeats = max(10, args.steps // 4), args.repeats
    import fastff
    from fastff.kernels.cuda.step import Lockstep
    x, y = paper_batch(10)
    rows = []
    for count in (1, 4, 16, 64):
        nets = [fastff.MLP(PAPER_SIZES, activation="tanh", device="cuda", seed=s)
                for s in range(count)]
        stats = [n.new_stats() for n in nets]
        lockstep = Lockstep()
        timed = time_device(lambda: lockstep.step(nets, [x] * count, [y] * count,
                                                  [0.01] * count, stats), steps, repeats)
        rows.append(dict(nets=count, round_us=timed["median_us"],
                         updates_per_s=round(count / (timed["median_us"] * 1e-6))))
    for r in rows:
        r["speedup"] = round(r["updates_per_s"] / rows[0]["updates_per_s"], 2)
    return dict(rows=rows)


def time_barrier(args):
    """The grid barrier's cost: launches of 0 and of 12 barriers (a step's 2 L at the paper's
    L = 6) at the grid the persistent step gets, the difference over 12."""
    from fastff.kernels.cuda.barrier import barrier_rounds
    grid = barrier_rounds(0)
    empty = time_device(lambda: barrier_rounds(0, grid), args.steps, args.repeats)
    twelve = time_device(lambda: barrier_rounds(12, grid), args.steps, args.repeats)
    return dict(grid=grid, launch_us=empty["median_us"], twelve_us=twelve["median_us"],
                per_barrier_us=round((twelve["median_us"] - empty["median_us"]) / 12, 3))


def time_phases(args, batch=10):
    """Each phase of the persistent step at ``batch`` in a profiling build: the median over
    ``--steps`` launches of one step, in microseconds, forward F1..FL then backward BL..B1."""
    import numpy as np
    import fastff
    from fastff import config
    config.CUDA_PROFILE_STEP, config.CUDA_STEP_PATH = True, "persistent"
    try:
        net = fastff.MLP(PAPER_SIZES, activation="tanh", device="cuda", seed=0)
        stats = net.new_stats()
        x, y = paper_batch(batch)
        runs = []
        for _ in range(args.steps):
            net.step_unchecked(x, y, 0.01, stats)
            runs.append(net.plan.launch.phase_ns.copy())
    finally:
        config.CUDA_PROFILE_STEP, config.CUDA_STEP_PATH = False, "auto"
    L = len(PAPER_SIZES) - 1
    names = [f"F{l + 1}" for l in range(L)] + [f"B{l}" for l in range(L, 0, -1)]
    median = np.median(np.array(runs[3:] or runs), axis=0) / 1e3
    return dict(batch=batch, grid=net.plan.launch.grid,
                phases_us={n: round(float(v), 2) for n, v in zip(names, median)},
                total_us=round(float(median.sum()), 2))


def host_time(args, calls=50):
    """Host microseconds per step call on each path at each batch (Python, the arguments and
    the launch, the GPU's queue kept from filling by a synchronization every ``calls``)."""
    import cupy
    import fastff
    rows = []
    for batch in BATCHES:
        x, y = paper_batch(batch)
        for label, values, tf32 in _paths(batch, "cuda"):
            _set_path(values)
            net = fastff.MLP(PAPER_SIZES, activation="tanh", device="cuda", seed=0, tf32=tf32)
            stats = net.new_stats()
            for _ in range(3):
                net.step_unchecked(x, y, 0.01, stats)
            cupy.cuda.Device().synchronize()
            runs = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                for _ in range(calls):
                    net.step_unchecked(x, y, 0.01, stats)
                runs.append(1e6 * (time.perf_counter() - t) / calls)
                cupy.cuda.Device().synchronize()
            rows.append(dict(batch=batch, path=label, host_us=round(statistics.median(runs), 2)))
        _set_path()
    return dict(rows=rows)


# what each part runs; a dry run's stand-ins run the same control flow without a GPU
RUNNERS = dict(tests=run_tests, correctness=check_correctness, barrier=time_barrier,
               phases=time_phases,
               fastff=time_fastff,
               host_time=host_time, torch=time_torch, shapeset=time_shapeset, lockstep=time_lockstep,
               long_run=long_run)


def dry_stand_in(name, args):
    """A dry run's result of a timing part; ``FASTFF_GPU_CHECK_FAIL`` and
    ``FASTFF_GPU_CHECK_HANG`` (part names, comma-separated) make a part fail or hang."""
    if name in os.environ.get("FASTFF_GPU_CHECK_HANG", "").split(","):
        time.sleep(10**6)
    if name in os.environ.get("FASTFF_GPU_CHECK_FAIL", "").split(","):
        raise RuntimeError(f"{name} failed on purpose (FASTFF_GPU_CHECK_FAIL)")
    if name in ("tests", "correctness"):
        return RUNNERS[name](args)
    return dict(dry_run=True)


def run_part(name, args):
    """Run part ``name`` here (the child process) and write DIR/parts/NAME.json."""
    t = time.perf_counter()
    try:
        result = dry_stand_in(name, args) if args.dry_run else RUNNERS[name](args)
    except Exception as exc:  # noqa: BLE001 -- the part's failure is its result
        result = dict(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:])
    result["seconds"] = round(time.perf_counter() - t, 1)
    _write(Path(args.out) / "parts" / f"{name}.json", json.dumps(result, indent=1))


def part_status(result):
    """``ok``, or why the part did not pass: ``failed``, ``timeout``, ``out of time``."""
    if "status_note" in result:
        return result["status_note"]
    if "error" in result or result.get("ok") is False:
        return "failed"
    return "ok"


def _write(path, text):
    """Write ``text`` to ``path`` whole (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _child_args(args):
    out = ["--out", str(args.out), "--updates", str(args.updates), "--steps", str(args.steps),
           "--repeats", str(args.repeats)]
    return out + (["--dry-run"] if args.dry_run else [])


def run_parts(args, results):
    """Every part in its own process, in order, each within its timeout and what is left of
    the budget; the results are written after each. Returns the parts that did not pass."""
    out, deadline = Path(args.out), time.monotonic() + args.budget
    skip = set(args.skip or ())
    results["status"] = {}
    for name, timeout in PARTS:
        if name in skip or (name == "long_run" and not args.updates):
            continue
        left = deadline - time.monotonic()
        if left < 5:
            results[name] = dict(status_note="out of time", error=f"not run: the budget of "
                                 f"{args.budget} s was spent", seconds=0.0)
        else:
            limit = min(timeout * args.timeout_scale, left)
            started = time.perf_counter()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name] + _child_args(args)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
                kept = out / "parts" / f"{name}.json"
                results[name] = (json.loads(kept.read_text()) if kept.is_file() else
                                 dict(error=f"the part's process ended with status "
                                      f"{proc.returncode} and no result: "
                                      f"{(proc.stderr or proc.stdout)[-2000:]}"))
            except subprocess.TimeoutExpired:
                results[name] = dict(status_note="timeout", error=f"timed out after {limit:.0f} "
                                     "s (a hung kernel?); its process was killed")
            results[name].setdefault("seconds", round(time.perf_counter() - started, 1))
        results["status"][name] = part_status(results[name])
        print(f"[{name}: {results['status'][name]}, {results[name]['seconds']} s] "
              f"{json.dumps(results[name])[:300]}", flush=True)
        _write(out / "gpu_check.json", json.dumps(results, indent=1))
        _write(out / "gpu_check.md", markdown(results) + "\n")
    return [name for name, status in results["status"].items() if status != "ok"]


def markdown(results):
    g = results["gpu"]
    out = [f"GPU: {g['name']} ({g['sms']} SMs, sm_{g['capability'].replace('.', '')}, "
           f"{g['memory_gb']} GB, L2 {g['l2_mb']} MB); host: {results['host']}", ""]
    if results.get("status"):
        out += ["parts: " + ", ".join(f"{n} {s}" for n, s in results["status"].items()), ""]
    corr = results.get("correctness", {})
    if "rows" in corr:
        out += ["| batch | path | weight error / tol | loss error / tol | grid | ok |",
                "|---:|---|---:|---:|---:|---|"]
        out += [f"| {r['batch']} | {r['path']} | {r['weight_error']} | {r['loss_error']} | "
                f"{r.get('grid', '')} | {'yes' if r['ok'] else 'NO'} |" for r in corr["rows"]]
        out.append("")
    tests = results.get("tests", {})
    out.append(f"cuda tests: {tests.get('summary') or tests.get('error') or tests.get('status')}")
    out += ["", "| batch | path | median us/step | target us | runs |", "|---:|---|---:|---:|---|"]
    rows = results.get("fastff") if isinstance(results.get("fastff"), list) else []
    rows = [r for r in rows if "median_us" in r]
    rows = rows + results.get("torch", {}).get("rows", [])
    for r in sorted(rows, key=lambda r: (r["batch"], r["path"])):
        out.append(f"| {r['batch']} | {r['path']} | {r['median_us']} | {TARGETS_US[r['batch']]:.0f} "
                   f"| {', '.join(map(str, r['runs_us']))} |")
    for name in ("tests", "correctness", "barrier", "phases", "fastff", "host_time", "torch"):
        if isinstance(results.get(name), dict) and "error" in results[name]:
            out.append(f"\n{name}: {results[name]['error']}")
    sh = results.get("shapeset", {})
    if "rows" in sh:
        out.append("\nShapeset on the GPU: " + ", ".join(
            f"{r['images_per_s'] / 1e6:.1f}M images/s at {r['images']} a launch" for r in sh["rows"])
            + f"; {sh['ratio']}x what the batch-1024 step at its target consumes")
    elif sh.get("error"):
        out.append(f"\nShapeset on the GPU: {sh.get('error')}")
    ls = results.get("lockstep", {})
    if "rows" in ls:
        out.append("\ntrain_many at batch 10 (one launch a round): " + "; ".join(
            f"{r['nets']} nets {r['round_us']} us a round, {r['updates_per_s']} updates/s "
            f"({r['speedup']}x one net)" for r in ls["rows"]))
    elif ls.get("error"):
        out.append(f"\ntrain_many: {ls.get('error')}")
    bar = results.get("barrier", {})
    if "per_barrier_us" in bar:
        out.append(f"\ngrid barrier: {bar['per_barrier_us']} us each at {bar['grid']} blocks "
                   f"(an empty cooperative launch {bar['launch_us']} us; 12 barriers "
                   f"{bar['twelve_us']} us)")
    ph = results.get("phases", {})
    if "phases_us" in ph:
        out.append(f"\npersistent step's phases at batch {ph['batch']} ({ph['grid']} blocks, "
                   f"us, barrier included): " + ", ".join(f"{n} {v}" for n, v in
                                                          ph["phases_us"].items())
                   + f"; in all {ph['total_us']}")
    host = results.get("host_time", {})
    if "rows" in host:
        out.append("\nhost time per step call: " + "; ".join(
            f"batch {r['batch']} {r['path']} {r['host_us']} us" for r in host["rows"]))
    lr = results.get("long_run", {})
    if "updates" in lr:
        out.append(f"\nShapeset run: {lr['updates']} updates in {lr['seconds']} s "
                   f"({lr['updates_per_s']} updates/s): the paper's 5 million in about "
                   f"{lr['paper_5M_minutes']} min; test error {lr['test_error']}")
    elif lr.get("error"):
        out.append(f"\nShapeset run: {lr.get('error')}")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for gpu_check.json and .md")
    parser.add_argument("--updates", type=int, default=20_000,
                        help="updates of the Shapeset run (0 skips it)")
    parser.add_argument("--steps", type=int, default=200, help="steps a timed repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds for every part together (parts left over are reported)")
    parser.add_argument("--timeout-scale", type=float, default=1.0,
                        help="multiplies every part's timeout")
    parser.add_argument("--skip", nargs="*", choices=[n for n, _ in PARTS], help="parts to leave out")
    parser.add_argument("--dry-run", action="store_true",
                        help="the control flow without a GPU (for the tests)")
    parser.add_argument("--part", choices=[n for n, _ in PARTS], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:  # a child: one part
        run_part(args.part, args)
        return 0
    out = Path(args.out)
    if args.dry_run:
        ok, info = True, dict(name="dry run (no GPU)", sms=0, capability="0.0", memory_gb=0,
                              l2_mb=0)
    else:
        ok, info = gpu_info()
    if not ok:
        print(f"gpu_check: no GPU present, nothing was checked or timed: {info}")
        return NO_GPU_STATUS
    out.mkdir(parents=True, exist_ok=True)
    results = dict(gpu=info, host=processor(), python=platform.python_version(),
                   when=time.strftime("%Y-%m-%d %H:%M:%S"), dry_run=args.dry_run)
    failed = run_parts(args, results)
    print(markdown(results))
    if failed:
        shown = ", ".join(f"{n} ({results['status'][n]})" for n in failed)
        print(f"gpu_check: {shown} did not pass", file=sys.stderr)
        return FAILED_STATUS
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
