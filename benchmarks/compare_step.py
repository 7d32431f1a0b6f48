"""The paper's SGD step, each contender in its own process, alternating: fastff, PyTorch eager,
JAX's jit (XLA, where ``jax`` is installed: ``pip install 'fastff[jax]'``), the NumPy
reference.

Run: ``python benchmarks/compare_step.py [--batches 10 128 1024] [--rounds 3]``. Prints the
processor (``lscpu``), then per batch the median step of each contender (the median over its
rounds of each round's median) and fastff's speed-up. Unlike ``pytest benchmarks``, no
contender shares a process with another: Numba's thread team, OpenBLAS's spinning threads and
PyTorch's OpenMP pool cannot slow each other down. Results: benchmarks/NOTES.md.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.util import find_spec

import numpy as np

PAPER_SIZES = [1024, 1000, 1000, 1000, 1000, 1000, 9]  # Shapeset input, 5 x 1000 tanh, 9 classes
CONTENDERS = ["fastff", "pytorch-eager", "jax-jit", "numpy-reference"]


def installed(contender):
    """Whether a contender's library is importable here (fastff and NumPy always are)."""
    needs = {"pytorch-eager": "torch", "jax-jit": "jax"}.get(contender)
    return needs is None or find_spec(needs) is not None


def processor():
    """The lscpu model name and the vector ISA flags that matter here."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"{platform.processor() or 'unknown processor'} ({os.cpu_count()} cores; no lscpu)"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return (f"{fields.get('Model name', '?').strip()} (family {fields.get('CPU family', '?').strip()}"
            f", model {fields.get('Model', '?').strip()}, {os.cpu_count()} cores; "
            f"{' '.join(isa)})")


def paper_data(batch):
    """The benchmarks' inputs and labels for one batch size (seeded)."""
    rng = np.random.default_rng(0)
    return (rng.random((batch, PAPER_SIZES[0]), dtype=np.float32),
            rng.integers(0, PAPER_SIZES[-1], batch))


def torch_step(tx, ty, device="cpu"):
    """PyTorch's SGD step of the paper's network (seeded) on the tensors (tx, ty), as a
    function; the net lives on ``device``."""
    import torch
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(PAPER_SIZES[:-1], PAPER_SIZES[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(PAPER_SIZES) - 2:
            layers.append(torch.nn.Tanh())
    net = torch.nn.Sequential(*layers).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(tx), ty).backward()
        opt.step()
    step.net, step.opt = net, opt
    return step


def jax_step(x, y, params, lr=0.01):
    """JAX's SGD step of the paper's network on (x, y) from ``params`` (the (W, b) pairs, W of
    shape (n_in, n_out)), as a new user would write it: ``jax.jit`` of ``value_and_grad`` and
    the update, the parameters donated so that XLA updates them in place. The function returns
    the loss and keeps the parameters (``step.params()``)."""
    import jax
    import jax.numpy as jnp

    def loss(params, x, y):
        h = x
        for i, (W, b) in enumerate(params):
            h = h @ W + b
            if i < len(params) - 1:
                h = jnp.tanh(h)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), y[:, None], axis=1))

    def update(params, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), value
    update = jax.jit(update, donate_argnums=0)
    state = [[(jnp.asarray(W), jnp.asarray(b)) for W, b in params]]
    tx, ty = jnp.asarray(x), jnp.asarray(y)

    def step():
        state[0], value = update(state[0], tx, ty)
        return float(value)  # waits for the step, as fastff's returned loss does
    step.params = lambda: [(np.asarray(W), np.asarray(b)) for W, b in state[0]]
    return step


def paper_step(contender, x, y):
    """A function taking one SGD step of the paper's network on (x, y), for ``contender``:
    fastff, the NumPy reference (both with per-step statistics), PyTorch eager or JAX's jit
    (neither with statistics)."""
    if contender == "pytorch-eager":
        import torch
        return torch_step(torch.from_numpy(x), torch.from_numpy(y))
    import fastff
    if contender == "jax-jit":  # the same first weights as fastff's
        return jax_step(x, y, fastff.MLP(PAPER_SIZES, activation="tanh").params)
    net = fastff.MLP(PAPER_SIZES, activation="tanh",
                     kernels="reference" if contender == "numpy-reference" else None)
    stats = net.new_stats()
    return lambda: net.step(x, y, 0.01, stats=stats)


def measure(contender, batch, steps):
    """Median step time in seconds of ``steps`` steps after two warm-up steps (compiles)."""
    step = paper_step(contender, *paper_data(batch))
    step()
    step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[10, 128, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS,
                        default=[c for c in CONTENDERS if installed(c)],
                        help="default: every contender installed here")
    parser.add_argument("--one", nargs=2, metavar=("CONTENDER", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        batch = int(args.one[1])
        print(json.dumps(measure(args.one[0], batch, 30 if batch <= 128 else 8)))
        return
    print(processor())
    from fastff import config
    from fastff.kernels.cpu.blas import library
    print(f"fastff's BLAS above batch {config.CPU_SMALL_BATCH_MAX}: {library()} "
          "(fastff.config.CPU_BLAS)")
    for batch in args.batches:
        medians = {c: [] for c in args.contenders}
        for _ in range(args.rounds):
            for c in args.contenders:
                run = subprocess.run([sys.executable, __file__, "--one", c, str(batch)],
                                     capture_output=True, text=True)
                if run.returncode:
                    print(f"  {c}: failed\n{run.stderr[-800:]}")
                    continue
                medians[c].append(float(run.stdout.strip().splitlines()[-1]))
        row = {c: statistics.median(v) for c, v in medians.items() if v}
        parts = [f"{c} {1e3 * t:.2f} ms ({', '.join(f'{1e3 * v:.2f}' for v in medians[c])})"
                 for c, t in row.items()]
        print(f"batch {batch}: " + "; ".join(parts))
        if "fastff" in row:
            ratios = [f"{t / row['fastff']:.2f}x {c}" for c, t in row.items() if c != "fastff"]
            print(f"  fastff is faster by: {', '.join(ratios)}")


if __name__ == "__main__":
    main()
