"""The GPU tools of benchmarks/: the cost model and the one-command GPU check (without a GPU it
must say so and time nothing)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402
import gpu_model  # noqa: E402
from fastff import config  # noqa: E402


def test_the_cost_model_counts_each_path():
    rows = {(r["batch"], r["path"], r["launches"]): r for r in gpu_model.table()}
    one = rows[(10, "persistent", 1)]
    layers = rows[(10, "layers", 12)]
    # 2 L barriers a step but the launch's last; 2 L launches (each dC/dx forms the delta of
    # the layer below beside the update of the layer above, the cost runs in the output layer's
    # forward launch and steps its bias, the last two updates share a launch)
    assert one["barriers"] == 11 and layers["barriers"] == 0
    assert rows[(10, "persistent", 0.01)]["barriers"] == 12 - 1 / 100
    assert one["flops"] == layers["flops"] == 6 * 5_033_000 * 10
    assert one["w_bytes"] == 3 * 5_033_000 * 4 and layers["w_bytes"] == 4 * 5_033_000 * 4
    assert one["floor_us"] < layers["floor_us"]
    assert rows[(1024, "layers", 12)]["limit"] == "FP32"
    tf32 = rows[(1024, "layers, tf32", 12)]  # two thirds of the FLOPs on tensor cores
    assert tf32["tf32_flops"] == 4 * 5_033_000 * 1024 and tf32["floor_us"] < 650
    assert rows[(1024, "layers", 12)]["floor_us"] > 2 * tf32["floor_us"]
    assert not any(r["path"] == "persistent" for r in gpu_model.table() if r["batch"] > 16)
    table = gpu_model.markdown(gpu_model.table())
    split = rows[(1024, "layers, 3xTF32", 12)]  # all three products, three times each
    assert split["tf32_flops"] == 18 * 5_033_000 * 1024 and split["tensor_useful"] == \
        split["flops"]
    assert split["floor_us"] < rows[(1024, "layers", 12)]["floor_us"] / 2
    assert table.count("\n| ") == 1 + 3 + 2 * 3  # header; 3 rows at batch 10, 3 at 128 and 1024


def test_the_cost_model_counts_the_fused_backward_pass(monkeypatch):
    # a layer at a time: a delta launch a layer, and dC/dx written and read back
    fused, alone = (gpu_model.layers(128, fused=f) for f in (True, False))
    assert (fused["launches"], alone["launches"]) == (12, 24)
    # 5 dC/dx and the output delta
    assert alone["other_bytes"] - fused["other_bytes"] == 2 * 128 * (5 * 1000 + 9) * 4
    # tiles that cannot pair a dC/dx with an update: 3 L - 2 (the last two updates still share)
    assert gpu_model.layers(128, tile=(32, 64, 16))["launches"] == 16
    assert gpu_model.layers(128, sizes=[1024, 9])["launches"] == 2  # one layer: nothing to pair
    # a pair's launch: the two products' issue, or their blocks' waves at the pair's blocks an
    # SM; the output layer's update (16 blocks, a long chain) beside dC/dx costs no wave of its
    # own
    counts = gpu_model.RECORDED_SASS
    gx = gpu_model.product_terms(1024, 1000, 1000, counts["gemm"], "fp32", gpu_model.H200)
    top = gpu_model.product_terms(1000, 1024, 9, counts["update"], "fp32", gpu_model.H200,
                                   update=True)
    assert top[2] == 16 and top[1] > 5 * top[0]
    pair = gpu_model.launch_us([gx, top], 2, gpu_model.H200)
    assert pair == pytest.approx(max(gx[0] + top[0], 2 * gx[1]))
    assert pair < gpu_model.launch_us([gx], 2, gpu_model.H200) + \
        gpu_model.launch_us([top], 3, gpu_model.H200)
    # at batch 128 that update's 16 blocks would make the 256 of a 1000-wide dC/dx two waves:
    # dC/dx takes 7 splits instead of 8 beside it, and the launch is one wave
    gx = gpu_model.product_terms(128, 1000, 1000, counts["gemm"], "fp32", gpu_model.H200)
    beside = gpu_model.product_terms(128, 1000, 1000, counts["gemm"], "fp32", gpu_model.H200,
                                     beside=16)
    top = gpu_model.product_terms(1000, 128, 9, counts["update"], "fp32", gpu_model.H200,
                                  update=True)
    assert (gx[2], beside[2], top[2]) == (256, 224, 16) and beside[1] < 2 * gx[1]
    assert gpu_model.launch_us([beside, top], 2, gpu_model.H200) < \
        gpu_model.launch_us([gx, top], 2, gpu_model.H200)
    monkeypatch.setattr(config, "CUDA_FUSED_BACKWARD", False)
    assert gpu_model.layers(128)["launches"] == 24
    assert gpu_model.split_loads() == 8  # add_splits' #pragma unroll, as the source has it


def test_the_cost_model_of_shapeset_on_the_gpu():
    row = gpu_model.shapeset_rate(2_000)
    # the parameters fix what an image costs: 1.5 objects (and a few retries), 6 draws each
    assert 1.5 < row["polygons"] < 1.9 and 14 < row["draws"] < 19
    assert row["step_images_per_s"] == pytest.approx(1024 / 650e-6)
    assert row["ratio"] >= 10  # the generator must never hold the step back
    assert "Philox draws" in gpu_model.shapeset_markdown(row)


def test_the_cost_model_of_the_paper_budget():
    # Table 1 of a dataset: 6 models x 5 rates x 3 seeds of 5M updates, packed as a sweep packs
    runs = gpu_model.paper_runs(("shapeset",))
    assert len(runs) == 90 and {r[3] for r in runs} == {5_000_000}
    assert sorted({(r[1], r[2]) for r in runs}) == [
        ((1024, 1000, 1000, 1000, 1000, 9), "sigmoid"), ((1024,) + (1000,) * 5 + (9,), "sigmoid"),
        ((1024,) + (1000,) * 5 + (9,), "softsign"), ((1024,) + (1000,) * 5 + (9,), "tanh")]
    # a pack of one group: its rounds at the lockstep's floor
    one = [runs[-1]] * 16
    assert gpu_model.pack_seconds(one) == pytest.approx(
        5e6 * 1e-6 * gpu_model.floor_us(gpu_model.persistent(10, nets=16))[0])
    rows = {r["datasets"]: r for r in gpu_model.budget_rows()}
    shapeset = rows[("shapeset",)]
    assert (shapeset["gpu1_pack"], shapeset["gpu8_pack"]) == (15, 12)
    assert 1 < shapeset["gpu1_h"] < 4 and shapeset["gpu8_h"] < shapeset["gpu1_h"] / 6
    # the CPU: 90 runs of 5M measured steps; the longest run bounds any cluster
    assert shapeset["cpu_core_h"] == pytest.approx(90 * 5e6 * gpu_model.CPU_STEP_S / 3600,
                                                   rel=0.1)
    assert rows[("shapeset", "mnist")]["runs"] == 180
    assert "| shapeset + mnist | 180 x 5M |" in gpu_model.budget_markdown(list(rows.values()))


import sass  # noqa: E402


def _sass_tools():
    try:
        from cupy.cuda import nvrtc  # noqa: F401
    except ImportError:
        return False
    return sass.find_cuobjdump() is not None


needs_sass = pytest.mark.skipif(not _sass_tools(), reason="needs CuPy's NVRTC, cuobjdump and "
                                "nvdisasm (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")


@needs_sass
def test_the_sass_of_the_persistent_step_is_read_and_matches_the_recorded_counts():
    from fastff import config
    from fastff.kernels.cuda.geometry import step_chunks
    found = sass.step_loops("tanh", "float", "sm_90")
    fwd, bwd = found["forward"], found["backward"]
    kc, jc, _ = step_chunks()
    pb, lanes = config.CUDA_STEP_MAX_BATCH, config.CUDA_STEP_LANES
    # forward, a chunk: each lane's KC / SL steps of the reduction, each one 16-byte load of
    # four weights and 4 x 4 FMAs (its rows by its columns) from the staged inputs; the
    # weights' loads wait one round trip a chunk, and the inputs, loaded a chunk ahead, none
    assert fwd["16-byte loads"] == kc // lanes and fwd["fp32"] == kc // lanes * pb
    assert fwd["round trips"] == 1
    # backward, a chunk: JC / (4 SL) groups of four weights, each loaded and stored once and
    # met by PB rows of delta (dC/dx and dC/dW: 8 FMAs a row), then the step of the four
    quads = jc // (4 * lanes)
    assert bwd["16-byte loads"] == quads and bwd["store"] >= quads
    assert bwd["fp32"] >= quads * 8 * pb and bwd["round trips"] == 1
    # the chain of an iteration: more than its instructions, less than the two round trips
    # (weights, then the staging) it waited before its inputs were loaded a chunk ahead
    timed = sass.step_loops("tanh", "float", "sm_90", latency=350, sync=40)
    for loop in ("forward", "backward"):
        total = timed[loop]["total"]
        assert total < timed[loop]["chain cycles"] < 2 * 350 + 2 * 40 + total
    assert fwd["total"] > fwd["load"] + fwd["fp32"]  # and the address arithmetic around them
    counts, where = gpu_model.read_sass()
    assert where.startswith("read now")
    for loop, recorded in gpu_model.RECORDED_SASS.items():  # the fallback is today's code
        assert {k: counts[loop].get(k) for k in recorded} == recorded, loop
    gemm = sass.gemm_loop("grad_x_fused<float>")
    assert gemm["counts"]["fp32"] == 256
    # the staging unrolled into the loop, the next slice's loads in flight: one round trip
    assert gemm["with_nested"] == gemm["counts"]["total"] and gemm["counts"]["round trips"] == 1
    plain = sass.gemm_loop("grad_x_fused<float>", tensor=True)["counts"]["tensor"]
    split = sass.gemm_loop("grad_x_fused<float>", tensor="3xtf32")["counts"]["tensor"]
    assert split == 3 * plain == 24  # a tile depth of 16: 2 steps of 8, 4 products a warp


def test_a_cubin_is_the_one_two_compiles_agree_on(monkeypatch):
    # the compiler now and then schedules one program another way: the reader takes the cubin
    # two compiles agree on, keeps it for the process, and gives up after COMPILE_TRIES
    from fastff.kernels.cuda import compiler
    monkeypatch.setattr(compiler, "source", lambda: "// a program")
    monkeypatch.setattr(compiler, "compile_options", lambda: ("-std=c++17",))
    monkeypatch.setattr(sass, "_CUBINS", {})
    given = iter([(b"A", {}), (b"B", {}), (b"A", {}), (b"C", {})])
    calls = []
    monkeypatch.setattr(sass, "_compile_once", lambda n, a: calls.append(n) or next(given))
    assert sass.compile_cubin(["k"], "sm_90") == (b"A", {}) and len(calls) == 3
    assert sass.compile_cubin(["k"], "sm_90") == (b"A", {}) and len(calls) == 3  # kept
    every = iter([(bytes([i]), {}) for i in range(sass.COMPILE_TRIES)])
    monkeypatch.setattr(sass, "_compile_once", lambda n, a: next(every))
    with pytest.raises(RuntimeError, match="different cubins"):
        sass.compile_cubin(["other"], "sm_90")


@needs_sass
def test_the_grid_barrier_is_one_atomic_and_one_fence():
    # common.cuh's grid_sync as compiled: a block's arrival is one acq_rel atomic (a fence,
    # then the atomic), its wait polls with acquire loads; nothing resets the word
    cubin, lowered = sass.compile_cubin(["barrier_rounds"], "sm_90")
    body = [op for _, op, _ in sass.disassemble(cubin)[lowered["barrier_rounds"]]]
    kinds = [sass.kind(op) for op in body]
    assert kinds.count("atomic") == 1 and kinds.count("fence") == 1, body
    assert not any(op.startswith(("ST", "RED")) for op in body), body


@needs_sass
def test_a_last_block_arrives_with_one_atomic_and_one_fence():
    # common.cuh's last_to_arrive as compiled (the delta kernel has one arrival): the acq_rel
    # atomic's own fence, no sequentially consistent one before it
    name = "dense_backward_delta<float, 2>"
    cubin, lowered = sass.compile_cubin([name], "sm_90")
    body = [op for _, op, _ in sass.disassemble(cubin)[lowered[name]]]
    assert [sass.kind(op) for op in body].count("fence") == 1, body
    assert not any(op.startswith("MEMBAR.SC") for op in body), body
    assert sum(op.startswith("ATOM.E.ADD") for op in body) == 1, body


@needs_sass
def test_loops_are_found_by_their_backward_branches(tmp_path):
    # a kernel with one loop inside another: the inner is innermost, the outer holds it
    instructions = [(0x00, "MOV", "R1, R2"), (0x10, "LD.E", "R3, [R4]"),
                    (0x20, "FFMA", "R5, R3, R3, R5"), (0x30, "BRA", "0x10"),
                    (0x40, "IADD3", "R6, R6, 1"), (0x50, "BRA", "0x0"), (0x60, "EXIT", "")]
    inner, = sass.loops(instructions)
    assert (inner["start"], inner["end"]) == (0x10, 0x30)
    assert inner["counts"] == {"load": 1, "fp32": 1, "branch": 1, "total": 3, "round trips": 1}
    # the scoreboard: two loads used at once wait once; a load used at once, then another, twice
    together = [("LD.E", "R1, [R8]"), ("LD.E", "R2, [R9]"), ("FFMA", "R5, R1, R2, R5")]
    apart = [("LD.E", "R1, [R8]"), ("FFMA", "R5, R1, R1, R5"), ("LD.E", "R2, [R9]"),
             ("FFMA", "R5, R2, R2, R5")]
    assert sass.round_trips(together) == 1 and sass.round_trips(apart) == 2
    # the simulated chain: a load used at once waits its whole latency; ten instructions
    # between a load and its use cost nothing more (they run while it is in flight)
    assert sass.chain_cycles(apart, latency=100) == 2 * (100 + 2)
    early = [("LD.E", "R1, [R8]")] + [("IADD3", f"R{20 + i}, R9, 1, RZ") for i in range(10)] + [
        ("FFMA", "R5, R1, R1, R5")]
    assert sass.chain_cycles(early, latency=100) == 102  # 1 + 100 + 1, as without them
    assert sass.chain_cycles([("BAR.SYNC", "0x0")], latency=100, sync=40) == 41
    both = sass.loops(instructions, innermost=False)
    outer = [l for l in both if not l["innermost"]][0]
    assert outer["counts"]["total"] == 3 and outer["with_nested"] == 6


def test_the_forecast_is_never_under_the_floor_and_follows_the_compiled_code():
    counts = gpu_model.RECORDED_SASS
    rows = gpu_model.table(counts=counts, host={"persistent": 20.0, "layers": 20.0})
    for r in rows:
        assert r["forecast_us"] >= r["floor_us"], r
    one = {(r["batch"], r["path"], r["launches"]): r for r in rows}[(10, "persistent", 1)]
    # a longer loop forecasts a longer step; a slower host past the GPU sets it
    longer = dict(counts, forward=dict(counts["forward"], total=2 * counts["forward"]["total"]))
    assert gpu_model.forecast_persistent(10, longer)["gpu_us"] > one["forecast_us"]
    slow = gpu_model.forecast_persistent(10, counts, host_us=1e4)
    assert slow["forecast_us"] == 1e4 and slow["limit"] == "host"
    # the barrier: one fence (its acq_rel atomic), one arrival per block, a poll's round trip
    g = gpu_model.H200
    assert gpu_model.barrier_us(264) == pytest.approx(
        1e6 * (g["fence_cycles"] + 264 * g["atomic_serial_cycles"]
               + g["l2_latency_cycles"]) / g["clock_hz"])
    table = gpu_model.markdown(rows)
    assert "| floor us | floor set by | forecast us |" in table
    # the paper budget at the forecast: the lockstep's rounds from the same counts
    floor, forecast = gpu_model.budget_rows(datasets=("shapeset",)), gpu_model.budget_rows(
        datasets=("shapeset",), sass=counts)
    assert forecast[0]["gpu1_h"] > floor[0]["gpu1_h"]


def test_the_host_time_of_a_persistent_step_is_measured():
    us = gpu_model.host_step_us(batch=10, sizes=[20, 30, 30, 5], steps=50)
    assert 0 < us < 5_000


@pytest.mark.skipif(gpu_check.gpu_info()[0], reason="a GPU is present: the check would run")
def test_the_gpu_check_says_there_is_no_gpu(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == gpu_check.NO_GPU_STATUS, out.stderr
    assert "no GPU present, nothing was checked or timed" in out.stdout
    assert not any(tmp_path.iterdir())


def test_the_gpu_check_table():
    run = lambda us: dict(median_us=us, runs_us=[us, us + 1])  # noqa: E731
    results = dict(
        gpu=dict(name="NVIDIA H200", sms=132, capability="9.0", memory_gb=139.8, l2_mb=60.0),
        host="a host", tests=dict(status=0, summary="60 passed in 50.0s"),
        fastff=[dict(batch=10, path="persistent", **run(40.0)), dict(batch=1024, path="layers", **run(900.0))],
        torch=dict(rows=[dict(batch=10, path="pytorch eager", **run(2100.0))]),
        long_run=dict(updates=100, seconds=1.0, updates_per_s=100.0, paper_5M_minutes=833.3,
                      test_error=0.7),
        shapeset=dict(rows=[dict(images=1024, images_per_s=2.5e6, **run(400.0))],
                      step_images_per_s=1575385, ratio=1.6),
        lockstep=dict(rows=[dict(nets=1, round_us=40.0, updates_per_s=25000, speedup=1.0),
                            dict(nets=4, round_us=50.0, updates_per_s=80000, speedup=3.2)]))
    table = gpu_check.markdown(results)
    assert "4 nets 50.0 us a round, 80000 updates/s (3.2x one net)" in table
    assert "Shapeset on the GPU: 2.5M images/s at 1024 a launch; 1.6x" in table
    assert "NVIDIA H200 (132 SMs, sm_90" in table and "60 passed" in table
    assert "| 10 | persistent | 40.0 | 25 | 40.0, 41.0 |" in table
    assert table.index("pytorch eager") < table.index("| 1024 | layers")
    assert "5 million in about 833.3 min" in table
    results["torch"] = dict(error="ImportError: no torch")
    assert "torch: ImportError" in gpu_check.markdown(results)


def _dry_check(tmp_path, env=None, *args):
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--out",
                           str(out), "--updates", "0", *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, **(env or {})))
    return proc, out


def test_the_gpu_check_s_dry_run_passes_and_writes_after_every_part(tmp_path):
    import json
    proc, out = _dry_check(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / "gpu_check.json").read_text())
    assert set(results["status"]) == {n for n, _ in gpu_check.PARTS} - {"long_run"}
    assert set(results["status"].values()) == {"ok"}
    # correctness ran the real comparison: the CPU kernels against the float64 reference
    rows = results["correctness"]["rows"]
    assert [r["batch"] for r in rows] == list(gpu_check.BATCHES) and all(r["ok"] for r in rows)
    assert 0 < max(r["weight_error"] for r in rows) < 1
    assert "| 10 | cpu |" in (out / "gpu_check.md").read_text()


def test_a_failing_or_hanging_part_loses_only_itself_and_fails_the_check(tmp_path):
    import json
    import time
    t = time.perf_counter()
    # the parts that compute (correctness: three paper-size steps) are left out, so that the
    # short timeouts fit any machine (at 0.05 of them, 2.25 s, a part's start-up timed out on
    # a busy 2-core machine); the hang still costs only its own (27 s)
    proc, out = _dry_check(tmp_path, dict(FASTFF_GPU_CHECK_HANG="torch",
                                          FASTFF_GPU_CHECK_FAIL="fastff"),
                           "--timeout-scale", "0.3", "--skip", "correctness", "phases")
    assert time.perf_counter() - t < 120
    assert proc.returncode == gpu_check.FAILED_STATUS, proc.stdout + proc.stderr
    assert "fastff (failed), torch (timeout) did not pass" in proc.stderr
    results = json.loads((out / "gpu_check.json").read_text())
    status = results["status"]
    assert status["torch"] == "timeout" and status["fastff"] == "failed"
    assert status["shapeset"] == status["lockstep"] == status["barrier"] == "ok"
    assert "correctness" not in status
    assert "failed on purpose" in results["fastff"]["error"]
    assert "torch: timed out after" in (out / "gpu_check.md").read_text()


def test_a_spent_budget_is_reported_not_ignored(tmp_path):
    import json
    proc, out = _dry_check(tmp_path, dict(FASTFF_GPU_CHECK_HANG="host_time"), "--budget", "12")
    assert proc.returncode == gpu_check.FAILED_STATUS
    status = json.loads((out / "gpu_check.json").read_text())["status"]
    assert status["host_time"] == "timeout"
    assert status["torch"] == status["lockstep"] == "out of time"
    assert status["correctness"] == "ok"
