"""CPU throughput of the paper's network (1024-1000x5-9, tanh, float32).

Run: ``pytest benchmarks --benchmark-only``. Each group puts fastff's Numba kernels beside the
NumPy reference (and PyTorch eager and JAX's jit, when installed) in the same run; compare the
medians. In one process the contenders' thread pools can slow each other: compare_step.py runs
each in its own.
Samples/s = batch / median step time. Floors and measured ratios: benchmarks/NOTES.md.
"""
import numpy as np
import pytest

import fastff
from fastff.kernels import ForwardStats, cpu, reference

# the paper's network, its data and step: shared with compare_step.py (this directory is on
# sys.path when pytest collects it)
from compare_step import PAPER_SIZES, paper_data, paper_step

BATCHES = [10, 128, 1024]


@pytest.fixture(scope="session")
def batch_data():
    return paper_data


def _rounds(batch):
    return dict(rounds=30 if batch <= 128 else 8, warmup_rounds=2, iterations=1)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", ["fastff", "numpy-reference", "pytorch-eager", "jax-jit"])
def test_train_step(benchmark, batch_data, impl, batch):
    """One full SGD step: forward, softmax NLL, backward and update of every layer."""
    benchmark.group = f"train step, batch {batch}"
    x, y = batch_data(batch)
    if impl == "pytorch-eager":
        pytest.importorskip("torch")
    if impl == "jax-jit":
        pytest.importorskip("jax")
    step = paper_step(impl, x, y)
    step()
    benchmark.extra_info["samples_per_s"] = None
    benchmark.pedantic(step, **_rounds(batch))
    if benchmark.stats:  # None under --benchmark-disable (each body runs once, as a smoke test)
        benchmark.extra_info["samples_per_s"] = batch / benchmark.stats.stats.median


def _layer(batch, seed):
    """Input, weights and bias of one 1000x1000 layer (normalized init, float32)."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1000), dtype=np.float32)
    return rng, x, fastff.init_weights("normalized", 1000, 1000, rng), np.zeros(1000, np.float32)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", ["fastff", "numpy-reference"])
def test_dense_forward(benchmark, impl, batch):
    """One 1000x1000 tanh layer with statistics."""
    benchmark.group = f"dense_forward 1000x1000, batch {batch}"
    _, x, W, b = _layer(batch, seed=1)
    st = ForwardStats(1000, "tanh")
    fn = cpu.forward_unchecked if impl == "fastff" else reference.dense_forward
    out = np.empty((batch, 1000), np.float32)
    benchmark.pedantic(lambda: fn(x, W, b, "tanh", out=out, stats=st), **_rounds(batch))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", ["fastff", "numpy-reference"])
def test_dense_backward_sgd(benchmark, impl, batch):
    """Backward pass and SGD update of one 1000x1000 tanh layer."""
    benchmark.group = f"dense_backward_sgd 1000x1000, batch {batch}"
    rng, x, W, b = _layer(batch, seed=2)
    h = np.tanh(x @ W)
    g = (rng.standard_normal((batch, 1000)) * 1e-3).astype(np.float32)
    fn = cpu.backward_unchecked if impl == "fastff" else reference.dense_backward_sgd
    benchmark.pedantic(lambda: fn(x, h, W, b, g, "tanh", 1e-6), **_rounds(batch))


@pytest.mark.parametrize("generator", ["sequential", "counter"])
def test_shapeset_generation(benchmark, generator):
    """Shapeset-3x2 images per second (target: >= 50,000/s on 2 cores); the counter stream
    renders its images in parallel."""
    from fastff.data import shapeset
    shapeset.generate(100, seed=0, generator=generator)
    benchmark.group = "shapeset generation, 10,000 images"
    benchmark.pedantic(lambda: shapeset.generate(10_000, seed=1, generator=generator), rounds=10,
                       warmup_rounds=1)
    if benchmark.stats:
        benchmark.extra_info["images_per_s"] = 10_000 / benchmark.stats.stats.median


@pytest.mark.parametrize("batch", [10, 128])
@pytest.mark.parametrize("statistics", ["on", "off"])
def test_train_step_statistics_cost(benchmark, batch_data, statistics, batch):
    """What the per-step statistics (saturation counts, sums, histograms, dC/ds sums) cost."""
    benchmark.group = f"train step statistics cost, batch {batch}"
    x, y = batch_data(batch)
    net = fastff.MLP(PAPER_SIZES, activation="tanh")
    stats = net.new_stats() if statistics == "on" else None
    net.step(x, y, 0.01, stats=stats)
    benchmark.pedantic(lambda: net.step(x, y, 0.01, stats=stats), rounds=60, warmup_rounds=5,
                       iterations=1)


@pytest.mark.parametrize("jacobian_examples", [0, 3])
def test_monitor_snapshot(benchmark, batch_data, jacobian_examples):
    """One monitor snapshot of the paper's net on 300 examples (fastff.measure)."""
    benchmark.group = "monitor snapshot, 300 examples"
    x, y = batch_data(300)
    net = fastff.MLP(PAPER_SIZES, activation="tanh")
    benchmark.pedantic(lambda: fastff.measure(net, x, y, jacobian_examples=jacobian_examples),
                       rounds=5, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("batch", [10, 128])
@pytest.mark.parametrize("impl", ["fastff sgd", "fastff diag_hessian", "fastff grad_variance",
                                  "numpy-reference diag_hessian"])
def test_train_step_second_order(benchmark, batch_data, impl, batch):
    """A full step with per-parameter rates (fastff.kernels.rates) beside plain SGD's."""
    benchmark.group = f"train step with per-parameter rates, batch {batch}"
    x, y = batch_data(batch)
    kernels, method = impl.split()
    net = fastff.MLP(PAPER_SIZES, activation="tanh",
                     kernels="reference" if kernels == "numpy-reference" else None)
    rates = None if method == "sgd" else net.new_rates(method)
    net.step(x, y, 0.01, rates=rates)
    benchmark.pedantic(lambda: net.step(x, y, 0.01, rates=rates), **_rounds(batch))
    if benchmark.stats:  # None under --benchmark-disable (each body runs once, as a smoke test)
        benchmark.extra_info["samples_per_s"] = batch / benchmark.stats.stats.median
