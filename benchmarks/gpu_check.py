"""Verify and time fastff's CUDA backend on this machine's GPU, in one command.

Run: ``python benchmarks/gpu_check.py --out DIR`` on a machine with an NVIDIA GPU (sm_80 or
newer), CuPy and, for the baselines, PyTorch; no network needed. In about 5 minutes it:

1. runs the ``cuda`` tests (``pytest -m cuda``) and keeps their summary line;
2. times the paper's SGD step (1024-1000x5-9, tanh, float32, statistics on) at batch 10, 128
   and 1024 on each path (the persistent step, one launch a step or 100 steps a launch, and the
   layer-by-layer kernels in a CUDA graph and launched one by one, and in TF32 on tensor
   cores) with CUDA events: warm-up, then the median of several repeats of many steps;
3. times PyTorch's step of the same net, eager and captured in a CUDA graph, in the same run;
4. times Shapeset-3x2 drawn on the GPU, and ``train_many``'s lockstep of 1 to 64 copies of the
   paper's net (total updates/s against one net);
5. trains the paper's Shapeset run for ``--updates`` updates (monitoring on) and extrapolates
   its time to the paper's 5 million;

and writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` (the table for benchmarks/NOTES.md).
Each part that fails is recorded with its error and the others still run. Without a usable
GPU it says so and exits with status 2, having timed nothing.
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


def part(results, name, fn, *args):
    """Run one part of the check, keeping its result or its error."""
    t = time.perf_counter()
    try:
        results[name] = fn(*args)
    except Exception as exc:  # a failing part must not hide the others
        results[name] = dict(error=f"{type(exc).__name__}: {exc}",
                             traceback=traceback.format_exc()[-3000:])
    print(f"[{name}: {time.perf_counter() - t:.0f} s] {json.dumps(results[name])[:400]}",
          flush=True)


def run_tests(timeout):
    """``pytest -m cuda`` on the repository's tests; its summary line and status."""
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rfE", "-p", "no:cacheprovider",
           str(HERE.parent / "tests")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=HERE.parent)
    except subprocess.TimeoutExpired as exc:
        return dict(status="timeout", seconds=timeout, tail=(exc.stdout or "")[-3000:])
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    return dict(status=proc.returncode, summary=lines[-1] if lines else "",
                failures=[l for l in lines if l.startswith(("FAILED", "ERROR"))][:40],
                tail=proc.stdout[-3000:] + proc.stderr[-2000:])


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


def time_fastff(steps, repeats):
    """The step on each path at each batch size."""
    import fastff
    from fastff import config
    from fastff.kernels.cuda.step import StepLaunch
    rows = []
    for batch in BATCHES:
        x, y = paper_batch(batch)
        paths = [("layers", "layers", True, False), ("layers, no graph", "layers", False, False),
                 ("layers, tf32", "layers", True, True)]
        if batch <= config.CUDA_STEP_MAX_BATCH:
            paths.insert(0, ("persistent", "persistent", True, False))
        for label, path, graph, tf32 in paths:
            config.CUDA_STEP_PATH, config.CUDA_GRAPH = path, graph
            net = fastff.MLP(PAPER_SIZES, activation="tanh", device="cuda", seed=0, tf32=tf32)
            stats = net.new_stats()
            n = steps if batch <= 128 else max(10, steps // 10)
            row = dict(batch=batch, path=label, **time_device(
                lambda: net.step_unchecked(x, y, 0.01, stats), n, repeats))
            if path == "persistent":
                row["grid"] = net.plan.launch.grid
            rows.append(row)
        config.CUDA_STEP_PATH, config.CUDA_GRAPH = "auto", True
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


def time_torch(steps, repeats):
    """PyTorch's step of the paper's net, eager and as a CUDA graph."""
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


def long_run(updates, out):
    """The paper's Shapeset run (tanh, normalized init, batch 10, monitoring on) for
    ``updates`` updates, extrapolated to 5 million."""
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


def time_shapeset(repeats):
    """Shapeset-3x2's counter stream rendered on the GPU: images/s at 1,024 and 65,536 images a
    launch, against what the batch-1024 step at its target consumes (the target: 10x)."""
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


def time_lockstep(steps, repeats):
    """train_many's step: G copies of the paper's net at batch 10 (statistics on) stepped by
    one persistent launch, against one net alone: total updates/s."""
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


def markdown(results):
    g = results["gpu"]
    out = [f"GPU: {g['name']} ({g['sms']} SMs, sm_{g['capability'].replace('.', '')}, "
           f"{g['memory_gb']} GB, L2 {g['l2_mb']} MB); host: {results['host']}", ""]
    tests = results.get("tests", {})
    out.append(f"cuda tests: {tests.get('summary') or tests.get('error') or tests.get('status')}")
    out += ["", "| batch | path | median us/step | target us | runs |", "|---:|---|---:|---:|---|"]
    rows = results.get("fastff") if isinstance(results.get("fastff"), list) else []
    rows = rows + results.get("torch", {}).get("rows", [])
    for r in sorted(rows, key=lambda r: (r["batch"], r["path"])):
        out.append(f"| {r['batch']} | {r['path']} | {r['median_us']} | {TARGETS_US[r['batch']]:.0f} "
                   f"| {', '.join(map(str, r['runs_us']))} |")
    for name in ("fastff", "torch"):
        if isinstance(results.get(name), dict) and "error" in results[name]:
            out.append(f"\n{name}: {results[name]['error']}")
    sh = results.get("shapeset", {})
    if "rows" in sh:
        out.append("\nShapeset on the GPU: " + ", ".join(
            f"{r['images_per_s'] / 1e6:.1f}M images/s at {r['images']} a launch" for r in sh["rows"])
            + f"; {sh['ratio']}x what the batch-1024 step at its target consumes")
    elif sh:
        out.append(f"\nShapeset on the GPU: {sh.get('error')}")
    ls = results.get("lockstep", {})
    if "rows" in ls:
        out.append("\ntrain_many at batch 10 (one launch a round): " + "; ".join(
            f"{r['nets']} nets {r['round_us']} us a round, {r['updates_per_s']} updates/s "
            f"({r['speedup']}x one net)" for r in ls["rows"]))
    elif ls:
        out.append(f"\ntrain_many: {ls.get('error')}")
    lr = results.get("long_run", {})
    if "updates" in lr:
        out.append(f"\nShapeset run: {lr['updates']} updates in {lr['seconds']} s "
                   f"({lr['updates_per_s']} updates/s): the paper's 5 million in about "
                   f"{lr['paper_5M_minutes']} min; test error {lr['test_error']}")
    elif lr:
        out.append(f"\nShapeset run: {lr.get('error')}")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for gpu_check.json and .md")
    parser.add_argument("--updates", type=int, default=100_000,
                        help="updates of the Shapeset run (0 skips it)")
    parser.add_argument("--steps", type=int, default=200, help="steps a timed repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--test-timeout", type=int, default=240)
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    ok, info = gpu_info()
    if not ok:
        print(f"gpu_check: no GPU present, nothing was checked or timed: {info}")
        return NO_GPU_STATUS
    out.mkdir(parents=True, exist_ok=True)
    results = dict(gpu=info, host=processor(), python=platform.python_version(),
                   when=time.strftime("%Y-%m-%d %H:%M:%S"))
    if not args.skip_tests:
        part(results, "tests", run_tests, args.test_timeout)
    part(results, "fastff", time_fastff, args.steps, args.repeats)
    part(results, "torch", time_torch, args.steps, args.repeats)
    part(results, "shapeset", time_shapeset, args.repeats)
    part(results, "lockstep", time_lockstep, max(10, args.steps // 4), args.repeats)
    if args.updates:
        part(results, "long_run", long_run, args.updates, out)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    (out / "gpu_check.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
