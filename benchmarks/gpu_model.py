"""A cost model of the CUDA training step: what each path moves and computes per step of the
paper's net, and the floor that implies on the project's GPU, beside the targets.

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
"""
import argparse

PAPER_SIZES = [1024, 1000, 1000, 1000, 1000, 1000, 9]
BATCHES = (10, 128, 1024)
TARGETS_US = {10: 25.0, 128: 100.0, 1024: 650.0}  # the CUDA issue's targets on an H200
# The current estimate of the layer-by-layer path on an H100/H200: 4 L = 24 launches at 5-10 us
# of Python and CuPy each (the host's cost sets batches 10 and 128), epilogues and deltas over
# row tiles, the GEMMs' 4 x 4 register tiles fed by 16-byte shared loads (one per 8 FMAs in
# the SASS) at an estimated 55-65% of FP32 peak (batch 1024). With the 2 x 4 tiles of scalar
# loads (0.7 shared loads per FMA), 35-40%: 1200-1800 us at batch 1024; before the split-K
# reduction and the epilogues were fused: 300-550, 600-900 and 3000-4500.
# With tf32=True, x @ W and dC/dx (two thirds of the FLOPs) go to tensor cores, assumed at 40-60%
# of their peak (16 x 8 x 8 products from shared memory, no asynchronous copies).
LAYERS_ESTIMATE_US = {10: (150, 300), 128: (200, 350), 1024: (800, 1100)}
TF32_ESTIMATE_US = {128: (150, 300), 1024: (350, 500)}

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
)
ITEM = 4  # float32


def layer_shapes(sizes=PAPER_SIZES):
    return list(zip(sizes[:-1], sizes[1:]))


def strips(n, strip=8):
    return -(-n // strip)


def persistent(batch, gpu=H200, sizes=PAPER_SIZES, steps_per_launch=1, strip=8, nets=1):
    """The persistent step (train_step.cu): one launch, 2 L barriers; with ``nets`` > 1, one
    round of train_many's lockstep (the nets' strips share the launch and its barriers)."""
    L = len(sizes) - 1
    P = sum(k * n for k, n in layer_shapes(sizes))
    w_bytes = 3 * P * ITEM * nets  # forward read, backward read and write
    # every strip reads its layer's whole input (forward) or delta (backward) from L2
    other = nets * sum(strips(n, strip) * batch * k * ITEM + strips(k, strip) * batch * n * ITEM
                       for k, n in layer_shapes(sizes))
    resident = nets * P * ITEM <= gpu["l2_bytes"] * 0.8  # W stays in L2 between steps
    hbm = 0 if resident else w_bytes
    return dict(path="persistent" if nets == 1 else f"lockstep of {nets}", batch=batch,
                launches=1 / steps_per_launch, barriers=2 * L, w_bytes=w_bytes,
                other_bytes=other, hbm_bytes=hbm, l2_bytes=w_bytes + other,
                flops=6 * P * batch * nets, w_in_l2=resident, nets=nets)


def lockstep_table(gpu=H200, batch=10, counts=(1, 2, 4, 16, 64)):
    """train_many's rounds at ``batch``: the floor of a round and the total updates/s it
    allows, against one net alone."""
    rows = []
    for nets in counts:
        row = persistent(batch, gpu, nets=nets)
        us, limit, fixed = floor_us(row, gpu)
        row.update(floor_us=us, limit=limit, fixed_us=fixed, updates_per_s=nets / (us * 1e-6))
        rows.append(row)
    for row in rows:
        row["speedup"] = row["updates_per_s"] / rows[0]["updates_per_s"]
    return rows


def lockstep_markdown(rows):
    out = ["| nets | W in L2 | HBM MB | L2 MB | floor us a round | set by | updates/s | vs one net |",
           "|---:|---|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        out.append(f"| {r['nets']} | {'yes' if r['w_in_l2'] else 'no'} | "
                   f"{r['hbm_bytes'] / 1e6:.0f} | {r['l2_bytes'] / 1e6:.0f} | "
                   f"{r['floor_us']:.1f} | {r['limit']} | {r['updates_per_s']:,.0f} | "
                   f"{r['speedup']:.2f}x |")
    return "\n".join(out)


def layers(batch, gpu=H200, sizes=PAPER_SIZES, tile=(64, 64, 16), split_blocks=264, tf32=False):
    """The layer-by-layer path (dense_forward.cu, dense_backward_sgd.cu): 4 L launches (a
    fused forward a layer, the cost, a backward's delta, dC/dx and update, no dC/dx for the
    first layer), W read three times and written once, split-K partials. With ``tf32`` the
    forward product and dC/dx (4 P B FLOPs) run on tensor cores."""
    L = len(sizes) - 1
    P = sum(k * n for k, n in layer_shapes(sizes))
    tm, tn, tk = tile
    partials = 0
    for k, n in layer_shapes(sizes):
        for M, R, Nc in ((batch, k, n), (batch, n, k)):  # x W, delta W^T
            tiles = strips(Nc, tn) * strips(M, tm)
            splits = max(1, min(strips(R, tk), strips(split_blocks, tiles)))
            partials += 2 * splits * M * Nc * ITEM  # written, then read by the epilogue
    acts = sum(6 * batch * (k + n) * ITEM for k, n in layer_shapes(sizes))  # h, delta, g
    w_bytes = 4 * P * ITEM
    resident = P * ITEM <= gpu["l2_bytes"] * 0.8
    return dict(path="layers, tf32" if tf32 else "layers", batch=batch, launches=4 * L,
                barriers=0, w_bytes=w_bytes, other_bytes=partials + acts,
                hbm_bytes=0 if resident else w_bytes, l2_bytes=w_bytes + partials + acts,
                flops=6 * P * batch, tf32_flops=4 * P * batch if tf32 else 0, w_in_l2=resident)


def floor_us(row, gpu=H200):
    """The step's floor in microseconds and what sets it."""
    tf32 = row.get("tf32_flops", 0)
    compute = (row["flops"] - tf32) / gpu["fp32_flops"] + tf32 / gpu["tf32_flops"]
    parts = {"HBM": row["hbm_bytes"] / gpu["hbm_bytes_per_s"],
             "L2": row["l2_bytes"] / gpu["l2_bytes_per_s"],
             "FP32+TF32" if tf32 else "FP32": compute}
    limit = max(parts, key=parts.get)
    fixed = row["launches"] * gpu["launch_s"] + row["barriers"] * gpu["barrier_s"]
    return 1e6 * (parts[limit] + fixed), limit, 1e6 * fixed


def table(gpu=H200):
    rows = []
    for batch in BATCHES:
        candidates = [layers(batch, gpu)]
        if batch > 16:  # where tf32 applies: the layer path's products
            candidates.append(layers(batch, gpu, tf32=True))
        if batch <= 16:  # config.CUDA_STEP_MAX_BATCH
            candidates.insert(0, persistent(batch, gpu))
            candidates.insert(1, persistent(batch, gpu, steps_per_launch=100))
        for row in candidates:
            us, limit, fixed = floor_us(row, gpu)
            row.update(floor_us=us, limit=limit, fixed_us=fixed, target_us=TARGETS_US[batch])
            rows.append(row)
    return rows


def markdown(rows, gpu=H200):
    out = [f"Paper's net 1024-1000x5-9, float32, statistics on; {gpu['name']}: "
           f"{gpu['hbm_bytes_per_s'] / 1e12:.1f} TB/s HBM, {gpu['l2_bytes'] / 1e6:.0f} MB L2 "
           f"(assumed {gpu['l2_bytes_per_s'] / 1e12:.0f} TB/s), {gpu['fp32_flops'] / 1e12:.0f} "
           f"TFLOP/s FP32; a launch {gpu['launch_s'] * 1e6:.0f} us, a grid barrier "
           f"{gpu['barrier_s'] * 1e6:.0f} us (assumed).", "",
           "| batch | path | launches | barriers | W MB | other MB | HBM MB | GFLOP | floor us "
           "| set by | fixed us | target us | estimate now us |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        path = r["path"] + (" (100 steps a launch)" if r["launches"] < 1 else "")
        est = {"layers": LAYERS_ESTIMATE_US, "layers, tf32": TF32_ESTIMATE_US}.get(
            r["path"], {}).get(r["batch"])
        out.append(f"| {r['batch']} | {path} | {r['launches']:g} | {r['barriers']} | "
                   f"{r['w_bytes'] / 1e6:.1f} | {r['other_bytes'] / 1e6:.1f} | "
                   f"{r['hbm_bytes'] / 1e6:.1f} | {r['flops'] / 1e9:.2f} | {r['floor_us']:.1f} | "
                   f"{r['limit']} | {r['fixed_us']:.1f} | {r['target_us']:.0f} | "
                   f"{f'{est[0]}-{est[1]}' if est else 'not measured'} |")
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


def pack_seconds(pack, gpu=H200, batch=10):
    """One train_many pack on one GPU: every round, a lockstep launch per group of one net
    (shape and activation), for as many rounds as its longest run."""
    groups = {}
    for dataset, sizes, activation, updates in pack:
        groups.setdefault((sizes, activation), []).append(updates)
    round_us = sum(floor_us(persistent(batch, gpu, sizes=list(sizes), nets=len(members)), gpu)[0]
                   for (sizes, _), members in groups.items())
    return round_us * 1e-6 * max(r[3] for r in pack)


def budget_rows(gpu=H200, pack=None, gpus=(1, 8), datasets=("shapeset", "mnist", "cifar10",
                                                              "small_imagenet")):
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
            for t in sorted((pack_seconds(p, gpu) for p in packs), reverse=True):
                load[load.index(min(load))] += t
            row[f"gpu{n}_h"], row[f"gpu{n}_pack"] = max(load) / 3600, size
        paper = sum(k * n for k, n in layer_shapes())
        run_s = [CPU_STEP_S * sum(k * n for k, n in layer_shapes(r[1])) / paper * r[3]
                 for r in runs]
        row.update(cpu_core_h=sum(run_s) / 3600, cpu_run_h=max(run_s) / 3600)
        rows.append(row)
    return rows


def budget_markdown(rows, gpu=H200, gpus=(1, 8)):
    head = ("| Table 1 of | runs x updates | " + " | ".join(
        f"{n} {gpu['name'].split(' (')[0].split()[-1]} (h)" for n in gpus)
        + f" | CPU core-hours ({CPU_NAME}) | CPU, a core per run (h) |")
    out = [head, "|---|---:|" + "---:|" * (len(gpus) + 2)]
    for r in rows:
        name = " + ".join(r["datasets"]) if len(r["datasets"]) < 4 else "all four datasets"
        out.append(f"| {name} | {r['runs']} x {r['updates'] / 1e6:g}M | "
                   + " | ".join(f"{r[f'gpu{n}_h']:.1f} (packs of {r[f'gpu{n}_pack']})"
                                for n in gpus)
                   + f" | {r['cpu_core_h']:,.0f} | {r['cpu_run_h']:.1f} |")
    return "\n".join(out)


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    print(markdown(table()))
    print()
    print("train_many's lockstep at batch 10 (the persistent step, every net's strips in one "
          "launch):")
    print(lockstep_markdown(lockstep_table()))
    print()
    print(shapeset_markdown(shapeset_rate()))
    print()
    print("The paper budget (`fastff reproduce glorot2010 --budget paper`), Table 1, modelled: "
          "the lockstep's floor per round, the sweep's packs; the CPU from its measured step:")
    print(budget_markdown(budget_rows()))


if __name__ == "__main__":
    main()
