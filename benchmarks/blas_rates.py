"""The sgemm rate of each BLAS library fastff can use (fastff.config.CPU_BLAS: SciPy's OpenBLAS,
Intel oneMKL where installed) on the paper's step's three products, each library in its own
process, alternating.

Run: ``python benchmarks/blas_rates.py [--batches 128 1024] [--rounds 3]``. For each batch B
and each product of a hidden layer (1000 x 1000 weights): x @ W, dC/dx = delta @ W.T, and the
update W -= lr x.T delta (beta = 1), as fastff.kernels.cpu.blas calls them; the median of
``rounds`` processes, each the median of 5 timings after a second of warm-up (the first calls
run slower). Results: benchmarks/NOTES.md, "oneMKL on an Intel Xeon".
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

PRODUCTS = ("x @ W", "delta @ W.T", "W -= lr x.T delta")


def rates(batch, n=1000, warm_s=1.0, flop=2e9):
    """{product: GFLOP/s} in this process's library (config.CPU_BLAS); each timing about
    ``flop`` operations."""
    from fastff.kernels.cpu import blas
    rng = np.random.default_rng(0)
    x, delta = (rng.standard_normal((batch, n)).astype(np.float32) for _ in range(2))
    W = rng.standard_normal((n, n)).astype(np.float32)
    out = np.empty((batch, n), np.float32)
    calls = {"x @ W": lambda: blas.forward_product(x, W, out),
             "delta @ W.T": lambda: blas.grad_x_product(delta, W, out),
             "W -= lr x.T delta": lambda: blas.sgd_update(x, delta, W, 1e-9)}
    reps = max(3, int(flop / (2 * batch * n * n)))
    return {name: 2 * batch * n * n / statistics.median(timings(call, 5, reps, warm_s)) / 1e9
            for name, call in calls.items()}


def timings(call, rounds, reps=1, warm_s=1.0):
    """Seconds per ``call()`` in each of ``rounds`` rounds of ``reps`` calls, after ``warm_s``
    seconds of calls (a product's first calls run slower: on an Intel Xeon about 200 GFLOP/s
    for the first five, 290 after)."""
    start = time.perf_counter()
    while time.perf_counter() - start < warm_s:
        call()
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            call()
        out.append((time.perf_counter() - t) / reps)
    return out


def libraries():
    """The libraries installed here."""
    from fastff.kernels.cpu import mkl
    return ["openblas"] + (["mkl"] if mkl.load() is not None else [])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one", nargs=2, metavar=("LIBRARY", "BATCH"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(rates(int(a.one[1]))))
        return
    from compare_step import processor
    print(processor())
    for batch in a.batches:
        found = {lib: [] for lib in libraries()}
        for _ in range(a.rounds):
            for lib in found:
                run = subprocess.run([sys.executable, __file__, "--one", lib, str(batch)],
                                     capture_output=True, text=True,
                                     env=dict(os.environ, FASTFF_CPU_BLAS=lib))
                if run.returncode:
                    print(f"  {lib}: failed\n{run.stderr[-800:]}")
                    continue
                found[lib].append(json.loads(run.stdout.strip().splitlines()[-1]))
        for lib, runs in found.items():
            if runs:
                print(f"batch {batch} {lib:>8}: " + ", ".join(
                    f"{name} {statistics.median(r[name] for r in runs):.0f}"
                    for name in PRODUCTS) + " GFLOP/s")


if __name__ == "__main__":
    main()
