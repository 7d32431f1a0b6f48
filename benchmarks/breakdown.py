"""Where the CPU step's time goes at large batches: the paper's step (1024-1000x5-9, tanh,
float32, statistics on) split into its parts, beside the sgemm floor of its three products.

Run: ``python benchmarks/breakdown.py [--batches 128 1024] [--steps 10]``. Each part of
fastff's CPU kernels (:mod:`fastff.kernels.cpu`) is wrapped with a timer for the run: the
three BLAS products (x @ W, dC/dx = delta @ W.T, the update W -= lr x.T delta), the forward
epilogues (bias, activation, statistics), the backward's delta epilogues (f', the bias step,
statistics), the softmax cost; what is left of the step is Python and the model's own work.
The floor: the step's FLOPs (2 B for each weight in each of the three products, less the
first layer's dC/dx, which no step forms) at the rate this machine's sgemm reaches on the
step's typical product (measured here, same BLAS). Results: benchmarks/NOTES.md, "Large batches:
where the time goes".
"""
import argparse
import time
from collections import defaultdict

import numpy as np

PAPER_SIZES = [1024, 1000, 1000, 1000, 1000, 1000, 9]
PARTS = {  # (module attribute path, part name)
    ("blas", "forward_product"): "x @ W (BLAS)",
    ("blas", "grad_x_product"): "dC/dx = delta @ W.T (BLAS)",
    ("blas", "sgd_update"): "W -= lr x.T delta (BLAS)",
    ("cpu", "forward_epilogue_serial"): "forward epilogue: bias, f, statistics",
    ("cpu", "forward_epilogue"): "forward epilogue: bias, f, statistics",  # on every core
    ("cpu", "delta_bias_serial"): "delta epilogue: f', bias step, statistics",
    ("cpu", "delta_bias"): "delta epilogue: f', bias step, statistics",  # (after oneMKL)
    ("cpu", "softmax_nll_unchecked"): "softmax cost",
}


def sgemm_rate(n=1000, batch=1024, repeats=15, warm_s=1.0):
    """FLOP/s of this machine's sgemm (the BLAS library the kernels use,
    :func:`fastff.kernels.cpu.blas.library`) on a (batch, n) x (n, n) product, the step's
    typical shape: the best of ``repeats`` after ``warm_s`` seconds of the same product
    (blas_rates.timings)."""
    from blas_rates import timings
    from fastff.kernels.cpu import blas
    rng = np.random.default_rng(0)
    a = rng.random((batch, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((batch, n), np.float32)
    return 2 * batch * n * n / min(timings(lambda: blas.gemm(1.0, a, b, out), repeats,
                                           warm_s=warm_s))


def breakdown(batch, steps=10):
    """{part: seconds per step} of the paper's step at ``batch`` (statistics on), with
    ``step`` the whole step's median and ``other`` what the parts leave."""
    import fastff
    from fastff.kernels import cpu
    from fastff.kernels.cpu import blas
    spent = defaultdict(float)
    modules = {"blas": blas, "cpu": cpu}
    saved = {}

    def timed(fn, name):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper
    for (module, attr), name in PARTS.items():
        saved[(module, attr)] = getattr(modules[module], attr)
        setattr(modules[module], attr, timed(saved[(module, attr)], name))
    try:
        net = fastff.MLP(PAPER_SIZES, activation="tanh")  # its plan binds the patched softmax
        stats = net.new_stats()
        rng = np.random.default_rng(0)
        x = rng.random((batch, PAPER_SIZES[0]), dtype=np.float32)
        y = rng.integers(0, PAPER_SIZES[-1], batch)
        for _ in range(2):
            net.step(x, y, 0.01, stats=stats)
        spent.clear()
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            net.step(x, y, 0.01, stats=stats)
            times.append(time.perf_counter() - t)
    finally:
        for (module, attr), fn in saved.items():
            setattr(modules[module], attr, fn)
    out = {name: spent[name] / steps for name in PARTS.values()}
    out["step"] = float(np.median(times))
    out["other"] = sum(times) / steps - sum(spent.values()) / steps
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args(argv)
    from compare_step import processor
    print(processor())
    rate = sgemm_rate()
    P = sum(k * n for k, n in zip(PAPER_SIZES[:-1], PAPER_SIZES[1:]))
    first = PAPER_SIZES[0] * PAPER_SIZES[1]  # the first layer's dC/dx is never formed
    from fastff.kernels.cpu.blas import library
    print(f"sgemm ({library()}), 1024 x 1000 by 1000 x 1000: {rate / 1e9:.0f} GFLOP/s")
    for batch in a.batches:
        parts = breakdown(batch, a.steps)
        floor = 2 * batch * (3 * P - first) / rate
        print(f"\nbatch {batch}: step {1e3 * parts['step']:.1f} ms; the products' floor at "
              f"that rate {1e3 * floor:.1f} ms ({parts['step'] / floor:.2f}x)")
        for name, s in parts.items():
            if name != "step":
                print(f"  {name:<45} {1e3 * s:8.2f} ms  {100 * s / parts['step']:5.1f}%")


if __name__ == "__main__":
    main()
