"""A cost model of the CUDA training step: what each path moves and computes per step of the
paper's net, the floor that implies on the project's GPU and the forecast of its compiled code
(from its SASS, benchmarks/sass.py, and the host's measured time per step), beside the targets.

Run: ``python benchmarks/gpu_model.py``. No GPU needed: the numbers are counted
from the kernels' decomposition (fastff/kernels/cuda/), not measured. Measured times come from
``benchmarks/gpu_check.py`` on a GPU. Results and their discussion: benchmarks/NOTES.md, "CUDA:
the cost model".

Counted per step, float32, statistics on:

* ``W traffic``: bytes of W read and written. The persistent step reads W once in the forward
  and once in the backward, where it also writes it. The layer-by-layer path reads W in the
  forward product, again for dC/dx and again (with the write) in the update.
* ``other traffic``: activations, deltas and partial products between SMs and L2. The
  persistent step's strips each read the whole input of their layer (forward) or its whole
  delta (backward); the layer path writes and reads its split-K partial products.
* ``FLOPs``: 2 P B for the forward, dC/dx and dC/dW each (P weights, B rows).
* launches and grid barriers per step, each at a fixed cost (below).

The floor is max(HBM bytes / HBM bandwidth, L2 bytes / L2 bandwidth, FLOPs / FP32 peak) plus
the launches' and barriers' fixed costs: what the step cannot beat, not what it will take.

The forecast (:func:`forecast_persistent`, :func:`forecast_layers`) is what it is expected to
take: each hot loop's instructions and loads per iteration as the SASS has them, the chain of
dependent loads they form (Little's law: what a warp keeps in flight over an L2 round trip),
instruction issue, the barriers' parts, and the host's measured time per step.
"""
import argparse
import functools
import re

PAPER_SIZES = [1024, 1000, 1000, 1000, 1000, 1000, 9]
BATCHES = (10, 128, 1024)
TARGETS_US = {10: 25.0, 128: 100.0, 1024: 650.0}  # the CUDA issue's targets on an H200
H200 = dict(
    name="NVIDIA H200 (132 SMs)",
    hbm_bytes_per_s=4.8e12,
    l2_bytes=50e6,
    # L2 to SM bandwidth is not published; about 1.5x HBM is what microbenchmarks of the H100
    # report for data spread over both L2 partitions (an assumption, to be measured)
    l2_bytes_per_s=7.0e12,
    fp32_flops=67e12,
    tf32_flops=494e12,  # dense TF32 on tensor cores (mma.sync m16n8k8)
    sms=132,
    # a kernel boundary in a stream or a graph on the GPU side; a launch from Python through
    # CuPy costs more on the host, but overlaps with the GPU when nothing synchronizes
    launch_s=2.0e-6,
    # one grid-wide barrier of a cooperative kernel: an atomic round trip through L2 and a
    # spin (assumed; gpu_check.py measures the persistent step, which holds 2 L of them)
    barrier_s=1.0e-6,
    # for the forecast (forecast_persistent, forecast_layers): the clock the FP32 peak is
    # quoted at, four warp schedulers an SM issuing one instruction a cycle each, and the
    # round trip of a load that hits L2 (assumed: microbenchmarks of Hopper report about
    # 260 cycles to the near L2 partition and more to the far one; gpu_check.py's phases
    # measure what a strip iteration takes)
    clock_hz=1.98e9,
    schedulers=4,
    l2_latency_cycles=350,
    # a grid barrier as train_step.cu makes it (fastff::grid_sync): one acq_rel atomic
    # arrival per block on one word (its fence, MEMBAR.ALL.GPU in the SASS, then the atomic,
    # serialized at its L2 slice), polls until the last arrival flips the word's top bit
    # (assumed cycles of each; gpu_check.py's barrier microbenchmark measures the sum)
    fence_cycles=800, atomic_serial_cycles=4,
    # what an SM holds: registers, shared memory (228 KB, 1 KB of it the runtime's a block)
    # and threads; with a kernel's registers and shared memory a block, how many blocks fit
    registers_per_sm=65536, shared_per_sm=228 * 1024, threads_per_sm=2048,
    # a __syncthreads of a block whose warps arrive together (assumed)
    sync_cycles=40,
    # what one SM can pull from L2 a cycle when few SMs pull at once (assumed; the split-K
    # epilogue's last block of a tile reads every split of its tile)
    sm_l2_bytes_per_cycle=64,
)
ITEM = 4  # float32


def layer_shapes(sizes=PAPER_SIZES):
    return list(zip(sizes[:-1], sizes[1:]))


def strips(n, strip=None):
    """Strips of the persistent step over ``n`` units (config.CUDA_STEP_STRIP wide)."""
    from fastff import config
    return -(-n // (config.CUDA_STEP_STRIP if strip is None else strip))


def persistent(batch, gpu=H200, sizes=PAPER_SIZES, steps_per_launch=1, strip=None, nets=1):
    """The persistent step (train_step.cu): one launch, 2 L barriers a step but the launch's
    last (nothing reads across blocks after it without dC/dW statistics); with ``nets`` > 1,
    one round of train_many's lockstep (the nets' strips share the launch and its barriers)."""
    L = len(sizes) - 1
    P = sum(k * n for k, n in layer_shapes(sizes))
    w_bytes = 3 * P * ITEM * nets  # forward read, backward read and write
    # every strip reads its layer's whole input (forward) or delta (backward) from L2
    other = nets * sum(strips(n, strip) * batch * k * ITEM + strips(k, strip) * batch * n * ITEM
                       for k, n in layer_shapes(sizes))
    resident = nets * P * ITEM <= gpu["l2_bytes"] * 0.8  # W stays in L2 between steps
    hbm = 0 if resident else w_bytes
    return dict(path="persistent" if nets == 1 else f"lockstep of {nets}", batch=batch,
                launches=1 / steps_per_launch, barriers=step_barriers(L, steps_per_launch),
                w_bytes=w_bytes,
                other_bytes=other, hbm_bytes=hbm, l2_bytes=w_bytes + other,
                flops=6 * P * batch * nets, w_in_l2=resident, nets=nets)


def step_barriers(L, steps_per_launch=1):
    """Grid barriers a step of the persistent step takes: 2 L, less the launch's last."""
    return 2 * L - 1 / steps_per_launch


def lockstep_table(gpu=H200, batch=10, counts=(1, 2, 4, 16, 64), sass=None):
    """train_many's rounds at ``batch``: the floor of a round and the total updates/s it
    allows, against one net alone; with the SASS counts, the forecast beside it."""
    rows = []
    for nets in counts:
        row = persistent(batch, gpu, nets=nets)
        us, limit, fixed = floor_us(row, gpu)
        row.update(floor_us=us, limit=limit, fixed_us=fixed, updates_per_s=nets / (us * 1e-6))
        if sass is not None:
            f = forecast_persistent(batch, sass, gpu, nets=nets)["gpu_us"]
            row.update(forecast_us=f, forecast_updates_per_s=nets / (f * 1e-6))
        rows.append(row)
    for row in rows:
        row["speedup"] = row["updates_per_s"] / rows[0]["updates_per_s"]
    return rows


def lockstep_markdown(rows):
    out = ["| nets | W in L2 | HBM MB | L2 MB | floor us a round | set by | updates/s at the "
           "floor | vs one net | forecast us a round | updates/s forecast |",
           "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['nets']} | {'yes' if r['w_in_l2'] else 'no'} | "
                   f"{r['hbm_bytes'] / 1e6:.0f} | {r['l2_bytes'] / 1e6:.0f} | "
                   f"{r['floor_us']:.1f} | {r['limit']} | {r['updates_per_s']:,.0f} | "
                   f"{r['speedup']:.2f}x | {r.get('forecast_us', float('nan')):.0f} | "
                   f"{r.get('forecast_updates_per_s', float('nan')):,.0f} |")
    return "\n".join(out)


# How the layer path forms its products (fastff.kernels.cuda.launchers.products): on CUDA cores
# (the default); in 3xTF32, three tensor-core products for one (config.CUDA_SPLIT_TF32 = True);
# with tf32=True, plain TF32 in the forward and dC/dx, the update on CUDA cores.
LAYER_PATHS = {"fp32": "layers", "3xtf32": "layers, 3xTF32", "tf32": "layers, tf32"}


def layers(batch, gpu=H200, sizes=PAPER_SIZES, tile=(64, 64, 16), split_blocks=264,
           products="fp32", fused=None):
    """The layer-by-layer path (dense_forward.cu, dense_backward_sgd.cu, fused_pass.py): a fused
    forward a hidden layer, the output layer's with the cost (and its bias step) in the same
    launch (``cost_fused``: fused, float32, tiles of at most config.CUDA_THREADS threads), a
    dC/dx a layer but the first (each forming the delta of the layer below in its epilogue:
    ``fused``, config.CUDA_FUSED_BACKWARD) and an update a layer, each update in the dC/dx launch
    of the layer below (``pairs``: fused, with a square GEMM tile as wide as
    config.CUDA_UPDATE_TILE) and the last two in one launch: 2 L launches (3 L - 1 without pairs;
    4 L a layer at a time, where each layer has its delta launch and dC/dx is written for it to
    read back). W read three times and written once, split-K partials. ``products`` (a key of
    :data:`LAYER_PATHS`) says which of the three products (2 P B FLOPs each) run on tensor cores
    and how many times (``tf32_flops``: what the tensor cores execute; ``tensor_useful``: the
    FLOPs of the step they stand for)."""
    from fastff import config
    fused = config.CUDA_FUSED_BACKWARD if fused is None else fused
    L = len(sizes) - 1
    P = sum(k * n for k, n in layer_shapes(sizes))
    tm, tn, tk = tile
    pairs = fused and tm == tn == config.CUDA_UPDATE_TILE
    cost_fused = fused and ITEM == 4 and (tm // 4) * (tn // 4) <= config.CUDA_THREADS
    launches = ((L + (0 if cost_fused else 1) + (L - 1) + (0 if pairs else max(0, L - 2)) + 1)
                if fused else 4 * L)
    partials = 0
    for l, (k, n) in enumerate(layer_shapes(sizes)):
        # x W, and delta W^T above the first layer (no dC/dx of the input)
        for M, R, Nc in ((batch, k, n), (batch, n, k))[:2 if l else 1]:
            tiles = strips(Nc, tn) * strips(M, tm)
            splits = max(1, min(strips(R, tk), split_blocks // tiles))  # as gemm_geometry
            partials += 2 * splits * M * Nc * ITEM  # written, then read by the epilogue
    acts = sum(6 * batch * (k + n) * ITEM for k, n in layer_shapes(sizes))  # h, delta, g
    if fused:  # no dC/dx of a hidden layer written and read back, no output delta copied
        acts -= sum(2 * batch * k * ITEM for k, _ in layer_shapes(sizes)[1:])
        acts -= 2 * batch * sizes[-1] * ITEM
    w_bytes = 4 * P * ITEM
    resident = P * ITEM <= gpu["l2_bytes"] * 0.8
    product = 2 * P * batch
    passes = {"fp32": (0, 0, 0), "tf32": (1, 1, 0), "3xtf32": (3, 3, 3)}[products]
    return dict(path=LAYER_PATHS[products], products=products, batch=batch, fused=fused,
                pairs=pairs, cost_fused=cost_fused, launches=launches,
                barriers=0, w_bytes=w_bytes, other_bytes=partials + acts,
                hbm_bytes=0 if resident else w_bytes, l2_bytes=w_bytes + partials + acts,
                flops=3 * product, tf32_flops=sum(passes) * product,
                tensor_useful=sum(1 for p in passes if p) * product, w_in_l2=resident)


def floor_us(row, gpu=H200):
    """The step's floor in microseconds and what sets it."""
    tf32 = row.get("tf32_flops", 0)
    compute = ((row["flops"] - row.get("tensor_useful", 0)) / gpu["fp32_flops"]
               + tf32 / gpu["tf32_flops"])
    parts = {"HBM": row["hbm_bytes"] / gpu["hbm_bytes_per_s"],
             "L2": row["l2_bytes"] / gpu["l2_bytes_per_s"],
             "FP32+TF32" if tf32 else "FP32": compute}
    limit = max(parts, key=parts.get)
    fixed = row["launches"] * gpu["launch_s"] + row["barriers"] * gpu["barrier_s"]
    return 1e6 * (parts[limit] + fixed), limit, 1e6 * fixed


# -- the forecast: from the compiled code ---------------------------------------------------------
# What one iteration of each hot loop issues, as benchmarks/sass.py read it from NVRTC 12.9's
# sm_90 SASS of train_steps<float, tanh, 12> (batch 10's rows) and of the layer kernels' main
# loops (an iteration with each loop inside it once). Used where the compiler or cuobjdump is
# missing; tests/test_gpu_tools.py checks them against a fresh read.
# "round trips": how many times an iteration waits for its own loads (sass.round_trips).
RECORDED_SASS = {
    # the persistent step's chunk loops, with their staging loop once (at batch 10)
    # ("chain cycles": sass.chain_cycles at H200's assumed latencies)
    "forward": {"total": 251, "load": 18, "16-byte loads": 6, "fp32": 72, "round trips": 1,
                "chain cycles": 515},
    "backward": {"total": 345, "load": 14, "16-byte loads": 2, "store": 10, "fp32": 200,
                 "round trips": 1, "chain cycles": 678},
    "gemm": {"total": 357, "fp32": 256, "round trips": 1, "chain cycles": 741,
             "blocks per SM": 2},  # dense_forward_fused<float, tanh>
    "gemm_tf32": {"total": 121, "tensor": 8, "round trips": 1, "chain cycles": 481,
                  "blocks per SM": 2},  # its TF32 loop (mma.m16n8k8)
    "gemm_3xtf32": {"total": 149, "tensor": 24, "round trips": 1, "chain cycles": 497,
                    "blocks per SM": 2},  # 3xTF32: 3 mma a product
    "update": {"total": 355, "fp32": 256, "round trips": 1, "chain cycles": 527,
               "blocks per SM": 3},  # dense_backward_update<float>
    "update_3xtf32": {"total": 147, "tensor": 24, "round trips": 1, "chain cycles": 482,
                      "blocks per SM": 3},  # and its 3xTF32 loop
    # the launches of two jobs: their blocks an SM (their loops are the ones above)
    "dC/dx and update": {"blocks per SM": 2},  # grad_x_and_update<float>
    "two updates": {"blocks per SM": 3},  # two_updates<float>
}
# the loops whose tensor-core products each stand for a third of an output's terms
SPLIT_LOOPS = ("gemm_3xtf32", "update_3xtf32")
FLOPS_PER_WARP = {"fp32": 32 * 2, "tensor": 16 * 8 * 8 * 2}  # an FFMA; an m16n8k8 product
# The strip epilogues (reduce_lanes' 5 rounds of shared memory and __syncthreads, the
# activation and the statistics of B x 8 outputs; backward: delta, the bias step, its
# statistics) and the softmax every block forms: cycles, assumed.
EPILOGUE_CYCLES = {"forward": 800, "backward": 1600, "softmax": 2000}
# Python's work per step on the host (the trainer's step_unchecked through CUDAPlan with a
# runtime that launches nothing), measured by host_step_us() on the machine that runs this;
# launches are asynchronous, so a step takes max(host, GPU) while the GPU keeps up.
HOST_STEP_US = None


def read_sass(arch="sm_90"):
    """The hot loops' counts, read now (benchmarks/sass.py), or :data:`RECORDED_SASS` where
    the compiler or cuobjdump is missing; and where they came from."""
    try:
        import sass
        step = sass.step_loops("tanh", "float", arch, latency=H200["l2_latency_cycles"],
                               sync=H200["sync_cycles"], batch=BATCHES[0])
        timing = dict(latency=H200["l2_latency_cycles"], sync=H200["sync_cycles"])
        forward, update = "dense_forward_fused<float, 2>", "dense_backward_update<float>"
        gemm = sass.gemm_loop(forward, arch, **timing)
        tf32 = sass.gemm_loop(forward, arch, tensor=True, **timing)
        split = sass.gemm_loop(forward, arch, tensor="3xtf32", **timing)
        update_split = sass.gemm_loop(update, arch, tensor="3xtf32", **timing)
        update = sass.gemm_loop(update, arch, **timing)
        from fastff.kernels.cuda.compiler import compile_report
        kernels = {r["kernel"]: resident_blocks(r) for r in compile_report(
            arch, names=["dense_forward_fused<float, 2>", "dense_backward_update<float>",
                         "grad_x_and_update<float>", "two_updates<float>"])}
    except Exception as exc:  # noqa: BLE001 (no NVRTC, no cuobjdump: the recorded counts)
        return dict(RECORDED_SASS), f"recorded counts ({type(exc).__name__}: {exc})"

    def loop(l):
        return dict(l["counts"], total=l["with_nested"], **{"blocks per SM": kernels[l["kernel"]]})
    return ({"forward": step["forward"], "backward": step["backward"], "gemm": loop(gemm),
             "gemm_tf32": loop(tf32), "gemm_3xtf32": loop(split), "update": loop(update),
             "update_3xtf32": loop(update_split),
             "dC/dx and update": {"blocks per SM": kernels["grad_x_and_update<float>"]},
             "two updates": {"blocks per SM": kernels["two_updates<float>"]}},
            f"read now from {arch} SASS")


def resident_blocks(report, gpu=H200):
    """Blocks of a kernel an SM holds at once, from its compile report's registers, shared
    memory and threads a block (:func:`fastff.kernels.cuda.compiler.compile_report`)."""
    threads = report["threads"]
    return max(1, min(gpu["registers_per_sm"] // (report["registers"] * threads),
                      gpu["shared_per_sm"] // (report["smem"] + 1024),
                      gpu["threads_per_sm"] // threads))


def host_step_us(batch=10, sizes=PAPER_SIZES, steps=2000):
    """Microseconds of host work per persistent step: :meth:`fastff.MLP.step_unchecked`
    through the CUDA plan with a runtime that launches nothing (NumPy arrays stand for the
    device's), statistics on."""
    import time
    import numpy as np
    import fastff
    from fastff.kernels import Backend, cuda
    from fastff.kernels.cuda.step import CUDAPlan

    class NoLaunch(cuda.Runtime):
        sms = 132

        def launch(self, name, grid, block, args, cooperative=False):
            pass

        def resident(self, name, threads):
            return 2
    before = cuda.set_runtime(NoLaunch())
    try:
        net = fastff.MLP(sizes, activation="tanh")
        net.backend = Backend("cuda-host-time", "cpu", "fastff.kernels.cuda", plan_class=CUDAPlan)
        net.plan = net.new_plan()
        x = np.random.default_rng(0).random((batch, sizes[0]), dtype=np.float32)
        y = np.arange(batch) % sizes[-1]
        stats = net.new_stats()
        for _ in range(50):
            net.step_unchecked(x, y, 0.01, stats)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(steps):
                net.step_unchecked(x, y, 0.01, stats)
            best = min(best, (time.perf_counter() - t) / steps * 1e6)
        return best
    finally:
        cuda.set_runtime(before)


def barrier_us(grid, gpu=H200):
    """Forecast of one grid barrier (common.cuh's ``grid_sync``: one acq_rel atomic a block,
    then polls): its fence, ``grid`` arrivals on one word, one poll's round trip."""
    cycles = (gpu["fence_cycles"] + grid * gpu["atomic_serial_cycles"]
              + gpu["l2_latency_cycles"])
    return 1e6 * cycles / gpu["clock_hz"]


def _strip_phase(kind, reduce_len, strip_count, loop, gpu, grid, threads=256):
    """One phase of the persistent step: ``strip_count`` strips dealt to ``grid`` blocks, each
    strip taking its reduction (``reduce_len``) a chunk at a time (forward KC inputs, backward
    JC columns of delta: :func:`fastff.kernels.cuda.geometry.step_chunks`), one iteration of
    the compiled chunk loop each. An iteration takes the longer of its dependent chain (its
    round trips, each an L2 latency, its two ``__syncthreads``, then its instructions one a
    cycle; or, where the SASS was read, its simulated ``chain cycles``: each load waited on only
    for what the instructions since it was issued do not cover, as a load issued a chunk ahead)
    and the issue of every resident warp's instructions on a scheduler."""
    from fastff import config
    from fastff.kernels.cuda.geometry import step_chunks
    kc, jc, _ = step_chunks()
    per_sm = min(config.CUDA_BLOCKS_PER_SM, -(-strip_count // gpu["sms"]))
    warps_per_scheduler = per_sm * threads / 32 / gpu["schedulers"]
    chain = loop.get("chain cycles") or (loop.get("round trips", 1) * gpu["l2_latency_cycles"]
                                         + 2 * gpu["sync_cycles"] + loop["total"])
    issue = loop["total"] * warps_per_scheduler
    chunks = -(-reduce_len // (kc if kind == "forward" else jc))
    rounds = -(-strip_count // grid)
    cycles = rounds * (chunks * max(chain, issue) + EPILOGUE_CYCLES[kind])
    return 1e6 * cycles / gpu["clock_hz"], "chain" if chain >= issue else "issue"


def forecast_persistent(batch, counts, gpu=H200, sizes=PAPER_SIZES, nets=1, host_us=None,
                        steps_per_launch=1):
    """Forecast of the persistent step (one net, or a round of ``nets`` in lockstep): its
    phases from the SASS counts, its barriers, the softmax, and the host's time per step
    (overlapped: the step takes the longer of host and GPU)."""
    from fastff import config
    # the launch's grid (fastff/kernels/cuda/step.py): no more blocks than the most strips of a
    # phase, so that every block has work, and no more than are co-resident
    most = max(max(strips(n), strips(k)) for k, n in layer_shapes(sizes))
    grid = min(nets * most, config.CUDA_BLOCKS_PER_SM * gpu["sms"])
    phases, limits = 0.0, set()
    for k, n in layer_shapes(sizes):
        for kind, reduce_len, strip_count in (("forward", k, nets * strips(n)),
                                              ("backward", n, nets * strips(k))):
            us, limit = _strip_phase(kind, reduce_len, strip_count, counts[kind], gpu, grid)
            phases += us
            limits.add(limit)
    L = len(sizes) - 1
    barriers = step_barriers(L, steps_per_launch) * barrier_us(grid, gpu)
    softmax = 1e6 * EPILOGUE_CYCLES["softmax"] / gpu["clock_hz"]
    gpu_us = phases + barriers + softmax
    host = host_us if host_us is not None else 0.0
    return dict(forecast_us=max(gpu_us, host), gpu_us=gpu_us, phases_us=phases,
                barriers_us=barriers, host_us=host,
                limit=("host" if host > gpu_us else
                       f"dependent loads ({'/'.join(sorted(limits))})"))


def product_terms(M, R, Nc, loop, kind, gpu, passes=1, update=False, beside=0):
    """What one layer-path product (M, R) x (R, Nc) takes in its geometry
    (:func:`fastff.kernels.cuda.geometry.gemm_geometry`, or with ``update`` the weight update's
    UT x UT tiles over the whole batch, update_geometry): issuing its padded tiles'
    instructions on every scheduler, and a block's dependent chain (a tile depth's simulated
    ``chain cycles`` where the SASS was read, with the next slice's loads in flight during this
    slice's products; else its round trips at the L2 latency plus its instructions).
    ``passes``: tensor-core products per useful one (3 for 3xTF32); ``beside``: the blocks of
    another job in the launch (gemm_geometry_beside). Returns the issue, one
    wave's chain (microseconds each) and the blocks, which :func:`launch_us` puts together in
    waves of the launch's blocks an SM (from its kernel's registers and shared memory,
    :func:`resident_blocks`)."""
    from fastff import config
    from fastff.kernels.cuda.geometry import gemm_geometry_beside, update_geometry
    tm, tn, tk = config.CUDA_GEMM_TILE
    if update:
        ut = config.CUDA_UPDATE_TILE
        grid, _, _ = update_geometry(M, Nc)
        tm = tn = ut
        chunk, splits = -(-R // tk) * tk, 1
    else:
        grid, _, chunk, splits = gemm_geometry_beside(M, R, Nc, beside)
    blocks = grid[0] * grid[1] * grid[2]
    padded = 2 * (-(-M // tm) * tm) * (-(-Nc // tn) * tn) * splits * chunk
    per_warp = loop[kind] * FLOPS_PER_WARP[kind] / passes / loop["total"]
    issue = padded / (gpu["sms"] * gpu["schedulers"] * gpu["clock_hz"] * per_warp)
    depth = loop.get("chain cycles") or (loop.get("round trips", 1) * gpu["l2_latency_cycles"]
                                         + loop["total"])
    return 1e6 * issue, 1e6 * (chunk // tk) * depth / gpu["clock_hz"], blocks


def launch_us(jobs, blocks_per_sm, gpu):
    """Forecast of one launch of the products ``jobs`` (each :func:`product_terms`; two in
    grad_x_and_update and two_updates, whose blocks run side by side): the longer of issuing
    every job's instructions and the waves of all their blocks at the launch's
    ``blocks_per_sm``, each as long as the longest job's chain."""
    issue = sum(j[0] for j in jobs)
    waves = -(-sum(j[2] for j in jobs) // (gpu["sms"] * blocks_per_sm))
    return max(issue, waves * max(j[1] for j in jobs))


@functools.cache
def split_loads():
    """How many splits' loads of an output fastff::add_splits issues together: its split loop's
    ``#pragma unroll`` in common.cuh."""
    from fastff.kernels import cuda
    body = cuda.source().split("add_splits(", 1)[1]
    return int(re.search(r"#pragma unroll (\d+)\s+for \(int p = 1; p < splits", body).group(1))


def _split_epilogue_us(M, R, Nc, gpu, threads=256, fused=False, beside=0):
    """Forecast of the split-K epilogue of a product (dense_forward_fused's, grad_x_fused's):
    after a tile's last split, its last block adds the splits of its outputs with every thread,
    each thread about TM TN / threads of them, the loads of ``config.CUDA_EPILOGUE_ROWS``
    outputs (float32; one in float64) and of :func:`split_loads` splits in flight together:
    the longer of a chain of round trips at the L2 latency and the tile's splits read by one
    SM. One split needs none (its product is the output), unless ``fused``: dC/dx forming the
    delta of the layer below reads its product back (with h below, in the same round trip).
    ``beside`` as :func:`product_terms` takes it."""
    from fastff import config
    from fastff.kernels.cuda.geometry import gemm_geometry_beside
    tm, tn, _ = config.CUDA_GEMM_TILE
    _, _, _, splits = gemm_geometry_beside(M, R, Nc, beside)
    if splits == 1 and not fused:
        return 0.0
    outputs = min(tm, M) * min(tn, Nc)
    trips = -(-(-(-outputs // threads)) // config.CUDA_EPILOGUE_ROWS) * -(-splits // split_loads())
    chain = trips * gpu["l2_latency_cycles"]
    reads = splits * outputs * ITEM / gpu["sm_l2_bytes_per_cycle"]
    return 1e6 * max(chain, reads) / gpu["clock_hz"]


# The cost's launch (softmax_loss.cu), assumed cycles: a load from shared memory, an arithmetic
# instruction that waits on the one before (a max, an add of a running sum), a block barrier;
# and the passes over its row a thread makes (max, exp and sum, divide, gradient and copy out),
# each one wait on shared memory, its loads in flight together, and a chain of a dependent
# instruction a class.
SHARED_CYCLES = 30
DEPENDENT_CYCLES = 4
BARRIER_CYCLES = 20
COST_ROW_PASSES = 4


def _cost_us(batch, classes, gpu, fused):
    """Forecast of the cost's launch (softmax_loss.cu, one block of config.CUDA_THREADS
    threads): each thread's rows one after another, each a round trip for its logits and label
    and :data:`COST_ROW_PASSES` passes over the row in shared memory; with ``fused`` the output
    layer's bias step: each (class, row group) unit's rows with 16 loads in flight (the loop's
    unrolling in the SASS), then a chain over the row groups; then the loss's tree over the
    threads (a shared load, an add and a barrier a level)."""
    from fastff import config
    threads = int(config.CUDA_THREADS)
    lat = gpu["l2_latency_cycles"]
    row = 2 * lat + COST_ROW_PASSES * (SHARED_CYCLES + DEPENDENT_CYCLES * classes)
    cycles = -(-batch // threads) * row
    if fused:
        groups = threads // classes if threads >= 2 * classes else 1
        cycles += (-(-(-(-batch // groups)) // 16) * lat + SHARED_CYCLES
                   + DEPENDENT_CYCLES * groups)
    cycles += (threads - 1).bit_length() * (SHARED_CYCLES + DEPENDENT_CYCLES + BARRIER_CYCLES)
    return 1e6 * cycles / gpu["clock_hz"]


def _arrival_cycles(gpu):
    """A block's arrival at a counter (common.cuh's last_to_arrive): a block barrier, one
    acq_rel atomic (its fence, then its round trip to L2), a block barrier."""
    return gpu["fence_cycles"] + gpu["l2_latency_cycles"] + 2 * gpu["sync_cycles"]


def _tile_ends_us(M, R, Nc, gpu, columns):
    """What follows a layer product's tiles beyond adding their splits: the last split's arrival
    where a tile has several (a lone split arrives with a block barrier only) and, with
    ``columns``, the column stage of the statistics or the bias step: the last row tile of a
    column tile arrives too (where there are several), then adds the row tiles' sums, 4 row
    tiles' loads in flight together (the loop as the compiler unrolls it), a round trip each 4."""
    from fastff.kernels.cuda.geometry import gemm_geometry
    grid, _, _, splits = gemm_geometry(M, R, Nc)
    cycles = _arrival_cycles(gpu) if splits > 1 else 0
    if columns:
        cycles += ((_arrival_cycles(gpu) if grid[1] > 1 else 0)
                   + -(-grid[1] // 4) * gpu["l2_latency_cycles"])
    return 1e6 * cycles / gpu["clock_hz"]


def _launch_arrival_us(M, R, Nc, gpu):
    """The arrival of a product's tiles, after their epilogues, at one counter of the launch
    (dense_forward_and_cost: the last runs the cost); none where one tile is the launch."""
    from fastff.kernels.cuda.geometry import gemm_geometry
    grid = gemm_geometry(M, R, Nc)[0]
    return 1e6 * _arrival_cycles(gpu) / gpu["clock_hz"] if grid[0] * grid[1] > 1 else 0.0


def _delta_us(B, N, gpu):
    """A layer's own delta launch (dense_backward_delta, a layer at a time): a thread's
    CUDA_DELTA_ROWS rows, 16 rows' loads in flight (as compiled), its column block's arrival,
    then the row blocks' sums, 4 a round trip."""
    from fastff import config
    from fastff.kernels.cuda.geometry import delta_geometry
    rows = min(B, config.CUDA_DELTA_ROWS)
    row_blocks = delta_geometry(B, N)[0][1]
    trips = -(-rows // 16) + -(-row_blocks // 4)
    return 1e6 * (_arrival_cycles(gpu) + trips * gpu["l2_latency_cycles"]) / gpu["clock_hz"]


def forecast_layers(batch, counts, gpu=H200, sizes=PAPER_SIZES, products="fp32", host_us=None):
    """Forecast of the layer-by-layer path (a CUDA graph of 2 L launches): each launch's
    products as :func:`launch_us` forecasts them from their main loops' SASS (``products`` as
    :func:`layers` takes it: x @ W and dC/dx on the FP32, TF32 or 3xTF32 loop, the update on
    its own FP32 or 3xTF32 loop; a dC/dx and an update side by side, and the last two updates,
    at the blocks an SM of their launch's kernel) and each product's split-K epilogue's chain
    (:func:`_split_epilogue_us`),
    the arrivals and column stages after its tiles (:func:`_tile_ends_us`; a layer at a time,
    each delta launch's, :func:`_delta_us`), the element-wise passes at the L2 floor, the
    launches' fixed cost, the cost (:func:`_cost_us`; in the output layer's forward launch
    where ``cost_fused``, after its tiles' arrival, :func:`_launch_arrival_us`), and the host's
    time per step (overlapped)."""
    floor = layers(batch, gpu, sizes, products=products)
    gemm = {"fp32": ("gemm", "fp32"), "tf32": ("gemm_tf32", "tensor"),
            "3xtf32": ("gemm_3xtf32", "tensor")}[products]
    update = ("update_3xtf32", "tensor") if products == "3xtf32" else ("update", "fp32")

    def terms(M, R, Nc, which, is_update=False, beside=0):
        name, kind = which
        return product_terms(M, R, Nc, counts[name], kind, gpu, update=is_update,
                             passes=3 if name in SPLIT_LOOPS else 1, beside=beside)
    fused, pairs = floor["fused"], floor["pairs"]
    shapes = layer_shapes(sizes)
    ups = [(terms(k, batch, n, update, True), update[0]) for k, n in shapes]  # x^T delta
    products_us = arrivals_us = 0.0
    launches = []  # each launch's products: ([terms, ...], the loop whose blocks an SM it has)
    for l, (k, n) in enumerate(shapes):
        launches.append(([terms(batch, k, n, gemm)], gemm[0]))  # x @ W
        products_us += _split_epilogue_us(batch, k, n, gpu)
        # the hidden layers' column statistics; the output layer has none
        arrivals_us += _tile_ends_us(batch, k, n, gpu, columns=l < len(shapes) - 1)
        if not fused:  # the layer's own delta launch
            arrivals_us += _delta_us(batch, n, gpu)
    for l in range(len(shapes) - 1, 0, -1):  # dC/dx, top layer first, beside an update
        k, n = shapes[l]
        above = ups[l + 1] if l + 1 < len(shapes) else None
        beside = above[0][2] if pairs and above else 0  # the update's blocks in its launch
        gx = terms(batch, n, k, gemm, beside=beside)
        products_us += _split_epilogue_us(batch, n, k, gpu, fused=fused, beside=beside)
        arrivals_us += _tile_ends_us(batch, n, k, gpu, columns=fused)
        if pairs and above:  # grad_x_and_update
            launches.append(([gx, above[0]], "dC/dx and update"))
        else:
            launches += [([gx], gemm[0])] + ([([above[0]], above[1])] if above else [])
    if fused and len(shapes) > 1:  # two_updates
        launches.append(([ups[1][0], ups[0][0]], "two updates"))
    else:
        launches += [([u], name) for u, name in ups[:2]]
    products_us += sum(launch_us(jobs, counts[loop]["blocks per SM"], gpu)
                       for jobs, loop in launches)
    passes = 1e6 * floor["other_bytes"] / gpu["l2_bytes_per_s"]
    fixed = 1e6 * floor["launches"] * gpu["launch_s"]
    cost = _cost_us(batch, sizes[-1], gpu, fused)
    if floor["cost_fused"]:  # the forward's tiles arrive, then the last runs the cost
        arrivals_us += _launch_arrival_us(batch, *shapes[-1], gpu)
    gpu_us = products_us + arrivals_us + passes + fixed + cost
    host = host_us if host_us is not None else 0.0
    return dict(forecast_us=max(gpu_us, host), gpu_us=gpu_us, host_us=host,
                products_us=products_us, arrivals_us=arrivals_us, cost_us=cost,
                limit="host" if host > gpu_us else "the products' issue and load chains")


def table(gpu=H200, counts=None, host=None):
    """Every path and batch: the floor and, given the SASS ``counts`` (:func:`read_sass`) and
    the host's time per step ``host`` ({"persistent": us, "layers": us}), the forecast."""
    rows = []
    for batch in BATCHES:
        candidates = [layers(batch, gpu)]
        if batch > 16:  # where tensor cores apply: the layer path's products
            candidates += [layers(batch, gpu, products="3xtf32"),
                           layers(batch, gpu, products="tf32")]
        if batch <= 16:  # config.CUDA_STEP_MAX_BATCH
            candidates.insert(0, persistent(batch, gpu))
            candidates.insert(1, persistent(batch, gpu, steps_per_launch=100))
        for row in candidates:
            us, limit, fixed = floor_us(row, gpu)
            row.update(floor_us=us, limit=limit, fixed_us=fixed, target_us=TARGETS_US[batch])
            if counts is not None:
                host = host or {}
                if row["path"] == "persistent":
                    many = row["launches"] < 1  # 100 steps a launch: the host's share is 1/100
                    f = forecast_persistent(batch, counts, gpu, host_us=host.get(
                        "persistent", 0.0) * (row["launches"]),
                        steps_per_launch=round(1 / row["launches"]))
                    f["forecast_us"] = max(f["gpu_us"], f["host_us"]) if many else \
                        f["forecast_us"]
                else:
                    f = forecast_layers(batch, counts, gpu, products=row["products"],
                                        host_us=host.get("layers"))
                row.update(forecast_us=f["forecast_us"], forecast_limit=f["limit"])
            rows.append(row)
    return rows


def markdown(rows, gpu=H200):
    out = [f"Paper's net 1024-1000x5-9, float32, statistics on; {gpu['name']}: "
           f"{gpu['hbm_bytes_per_s'] / 1e12:.1f} TB/s HBM, {gpu['l2_bytes'] / 1e6:.0f} MB L2 "
           f"(assumed {gpu['l2_bytes_per_s'] / 1e12:.0f} TB/s), {gpu['fp32_flops'] / 1e12:.0f} "
           f"TFLOP/s FP32; a launch {gpu['launch_s'] * 1e6:.0f} us, a grid barrier "
           f"{gpu['barrier_s'] * 1e6:.0f} us (assumed) in the floor. The floor is what the "
           "design cannot beat; the forecast is what its compiled code is expected to take.", "",
           "| batch | path | launches | barriers | W MB | other MB | HBM MB | GFLOP | floor us "
           "| floor set by | forecast us | forecast set by | target us |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|"]
    for r in rows:
        path = r["path"] + (" (100 steps a launch)" if r["launches"] < 1 else "")
        forecast = f"{r['forecast_us']:.0f}" if "forecast_us" in r else "-"
        out.append(f"| {r['batch']} | {path} | {r['launches']:g} | {r['barriers']:g} | "
                   f"{r['w_bytes'] / 1e6:.1f} | {r['other_bytes'] / 1e6:.1f} | "
                   f"{r['hbm_bytes'] / 1e6:.1f} | {r['flops'] / 1e9:.2f} | {r['floor_us']:.1f} | "
                   f"{r['limit']} | {forecast} | {r.get('forecast_limit', '-')} | "
                   f"{r['target_us']:.0f} |")
    return "\n".join(out)


# Shapeset-3x2 on the GPU (fastff/kernels/cuda/shapeset.cu): one warp per image, every
# thread making the image's draws. Warp instructions, from the PTX: a Philox4x32-10 draw and
# its conversion 130 (139 PTX instructions for a kernel that makes one draw and stores it); a
# polygon 130 (vertices, barriers, the area's sum) plus 28 per vertex (bounding box, and each
# row's pass over the edges); writing the 32 x 32 pixels 320.
SHAPESET_WARP_INSTRUCTIONS = dict(draw=130, polygon=130, vertex=28, image=320 + 50)
# sustained issue on the H200: 4 schedulers an SM at 1.75 GHz, half of them issuing (32 one-warp
# blocks an SM at most, and Philox's rounds depend on each other): an assumption
WARP_ISSUE_PER_S = 132 * 4 * 1.75e9 * 0.5


def shapeset_rate(images=20_000):
    """Modelled Shapeset images/s of shapeset.cu on the H200, from the draws, polygons and
    vertices the CPU twin counts over ``images`` images of a stream, against what the
    batch-1024 step at its target consumes."""
    from fastff.data import shapeset_counter as counter
    from fastff.shapeset_spec import angle_table
    import numpy as np
    draws, polygons, vertices = counter.work(np.uint64(1), np.uint64(2), images, 32, False,
                                             angle_table())
    w = SHAPESET_WARP_INSTRUCTIONS
    per_image = (draws * w["draw"] + polygons * w["polygon"] + vertices * w["vertex"]) / images \
        + w["image"]
    rate = WARP_ISSUE_PER_S / per_image
    consumed = 1024 / (TARGETS_US[1024] * 1e-6)
    return dict(draws=draws / images, polygons=polygons / images, vertices=vertices / images,
                warp_instructions=per_image, images_per_s=rate, step_images_per_s=consumed,
                ratio=rate / consumed, hbm_share=rate * 1024 * ITEM / H200["hbm_bytes_per_s"])


def shapeset_markdown(row):
    return (f"Shapeset-3x2 on the GPU (modelled): per image {row['draws']:.1f} Philox draws, "
            f"{row['polygons']:.2f} polygons, {row['vertices']:.1f} vertices, about "
            f"{row['warp_instructions']:.0f} warp instructions: {row['images_per_s'] / 1e6:.0f}M "
            f"images/s, {row['ratio']:.0f}x the {row['step_images_per_s'] / 1e6:.2f}M images/s "
            f"of the batch-1024 step at its target (the target: 10x); its float32 pixels "
            f"take {100 * row['hbm_share']:.0f}% of HBM bandwidth.")


# The paper budget of `fastff reproduce glorot2010` (fastff/reproduction/glorot2010.py): Table 1
# per dataset is 6 models x 5 learning rates x 3 seeds = 90 runs of 5 million updates at batch
# 10. Inputs and classes per dataset (the paper's §2).
DATASET_SHAPES = {"shapeset": (1024, 9), "mnist": (784, 10), "cifar10": (3072, 10),
                  "small_imagenet": (1369, 10)}
# The CPU step of the paper's Shapeset net at batch 10, one worker per core, measured by
# `fastff reproduce`'s estimate (fastff/reproduction/estimate.py) with 2 workers stepping at
# once on an AMD EPYC Zen 4 (lscpu family 25 model 17, AVX-512, 2 cores); other nets scale with
# their weights (the batch-10 step streams W).
CPU_STEP_S = 5.62e-3
CPU_NAME = "AMD EPYC Zen 4 core"


def paper_runs(datasets=("shapeset",)):
    """(dataset, sizes, activation, updates) of every Table 1 run of the ``paper`` budget, in
    the order a sweep packs them (by net)."""
    from fastff.reproduction import glorot2010 as g
    budget = g.BUDGETS["paper"]
    runs = []
    for p in g.points(budget, list(datasets), budget.seeds):
        n_in, classes = DATASET_SHAPES[p["dataset"]]
        width, depth = (int(v) for v in p["arch"].split("x"))
        runs.append((p["dataset"], (n_in,) + (width,) * depth + (classes,), p["activation"],
                     p["updates"]))
    return sorted(runs, key=lambda r: (r[0], r[1], r[2]))


def pack_seconds(pack, gpu=H200, batch=10, sass=None):
    """One train_many pack on one GPU: every round, a lockstep launch per group of one net
    (shape and activation), for as many rounds as its longest run; at the floor, or with the
    SASS counts at the forecast."""
    groups = {}
    for dataset, sizes, activation, updates in pack:
        groups.setdefault((sizes, activation), []).append(updates)

    def one_round(sizes, nets):
        if sass is not None:
            return forecast_persistent(batch, sass, gpu, sizes=list(sizes), nets=nets)["gpu_us"]
        return floor_us(persistent(batch, gpu, sizes=list(sizes), nets=nets), gpu)[0]
    round_us = sum(one_round(sizes, len(members)) for (sizes, _), members in groups.items())
    return round_us * 1e-6 * max(r[3] for r in pack)


def budget_rows(gpu=H200, pack=None, gpus=(1, 8), datasets=("shapeset", "mnist", "cifar10",
                                                              "small_imagenet"), sass=None):
    """The ``paper`` budget's Table 1 per dataset and in all: the modelled floor in hours on
    ``gpus`` GPUs (the sweep's packs, :func:`fastff.sweeps.pack_size`, each pack a task, dealt
    longest first to the least loaded GPU) and the CPU's core-hours and the hours of one run on
    a core."""
    from fastff.sweeps import pack_size
    sets = [(d,) for d in datasets] + [("shapeset", "mnist"), tuple(datasets)]
    rows = []
    for chosen in sets:
        runs = paper_runs(chosen)
        row = dict(datasets=chosen, runs=len(runs), updates=runs[0][3])
        for n in gpus:
            size = pack_size(len(runs), n, pack)
            packs = [runs[i:i + size] for i in range(0, len(runs), size)]
            load = [0.0] * n
            for t in sorted((pack_seconds(p, gpu, sass=sass) for p in packs), reverse=True):
                load[load.index(min(load))] += t
            row[f"gpu{n}_h"], row[f"gpu{n}_pack"] = max(load) / 3600, size
        paper = sum(k * n for k, n in layer_shapes())
        run_s = [CPU_STEP_S * sum(k * n for k, n in layer_shapes(r[1])) / paper * r[3]
                 for r in runs]
        row.update(cpu_core_h=sum(run_s) / 3600, cpu_run_h=max(run_s) / 3600)
        rows.append(row)
    return rows


def budget_markdown(rows, gpu=H200, gpus=(1, 8)):
    kind = gpu['name'].split(' (')[0].split()[-1]
    head = ("| Table 1 of | runs x updates | " + " | ".join(
        f"{n} {kind}, floor (h) | {n} {kind}, forecast (h)" for n in gpus)
        + f" | CPU core-hours ({CPU_NAME}) | CPU, a core per run (h) |")
    out = [head, "|---|---:|" + "---:|" * (2 * len(gpus) + 2)]
    for r in rows:
        name = " + ".join(r["datasets"]) if len(r["datasets"]) < 4 else "all four datasets"
        out.append(f"| {name} | {r['runs']} x {r['updates'] / 1e6:g}M | "
                   + " | ".join(f"{r[f'gpu{n}_h']:.1f} (packs of {r[f'gpu{n}_pack']}) | "
                                f"{r.get(f'forecast{n}_h', float('nan')):.1f}"
                                for n in gpus)
                   + f" | {r['cpu_core_h']:,.0f} | {r['cpu_run_h']:.1f} |")
    return "\n".join(out)


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    from compare_step import processor  # lscpu's model name, family and model
    counts, where = read_sass()
    host = {"persistent": host_step_us(10), "layers": host_step_us(128, steps=300)}
    def chunk(loop):
        c = counts[loop]
        chain = f", a chain of {c['chain cycles']} cycles" if "chain cycles" in c else ""
        return (f"{c['total']} instructions ({c['load']} global loads, {c.get('fp32', 0)} FP32, "
                f"{c['round trips']} round trips{chain})")
    print(f"SASS counts: {where}; per iteration, the persistent step's forward chunk loop "
          f"{chunk('forward')}, backward {chunk('backward')}; the "
          f"layer path's product {counts['gemm']['total']} ({counts['gemm']['fp32']} FFMA), "
          f"with TF32 {counts['gemm_tf32']['total']} ({counts['gemm_tf32']['tensor']} mma), "
          f"with 3xTF32 {counts['gemm_3xtf32']['total']} ({counts['gemm_3xtf32']['tensor']} "
          f"mma); the update's {counts['update']['total']} ({counts['update']['fp32']} FFMA), "
          f"with 3xTF32 {counts['update_3xtf32']['total']} "
          f"({counts['update_3xtf32']['tensor']} mma). "
          f"Host per step, measured here ({processor()}): "
          f"persistent {host['persistent']:.1f} us, layers {host['layers']:.1f} us.")
    print()
    print(markdown(table(counts=counts, host=host)))
    print()
    print("train_many's lockstep at batch 10 (the persistent step, every net's strips in one "
          "launch):")
    print(lockstep_markdown(lockstep_table(sass=counts)))
    print()
    print(shapeset_markdown(shapeset_rate()))
    print()
    print("The paper budget (`fastff reproduce glorot2010 --budget paper`), Table 1: the "
          "lockstep's rounds in the sweep's packs, at the floor and at the forecast; the CPU "
          "from its measured step:")
    floor, forecast = budget_rows(), budget_rows(sass=counts)
    for f, g in zip(floor, forecast):
        for n in (1, 8):
            f[f"forecast{n}_h"] = g[f"gpu{n}_h"]
    print(budget_markdown(floor))


if __name__ == "__main__":
    main()
