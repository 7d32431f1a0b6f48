"""benchmarks/compare_step.py, the each-contender-in-its-own-process benchmark, runs end to end."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_step.py"


def test_compare_step_prints_the_processor_and_a_ratio_per_batch():
    out = subprocess.run([sys.executable, str(SCRIPT), "--batches", "10", "--rounds", "1",
                          "--contenders", "fastff", "numpy-reference"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert "cores" in lines[0]  # the processor, from lscpu
    from fastff import config
    from fastff.kernels.cpu.blas import library
    blas_line = f"fastff's BLAS above batch {config.CPU_SMALL_BATCH_MAX}: {library()} "
    assert lines[1].startswith(blas_line)
    assert lines[2].startswith("batch 10: fastff ") and "numpy-reference" in lines[2]
    assert lines[3].strip().startswith("fastff is faster by: ")
    assert lines[3].endswith("x numpy-reference")


def test_jax_s_step_is_the_papers_step_from_fastff_s_weights():
    """The JAX contender computes what fastff's step computes: from the same weights and batch,
    one step gives the same loss and the same new weights (float32 tolerance)."""
    import pytest
    pytest.importorskip("jax")
    import numpy as np
    sys.path.insert(0, str(SCRIPT.parent))
    import compare_step
    import fastff
    sizes = [30, 20, 20, 7]
    net = fastff.MLP(sizes, activation="tanh", seed=3)
    x = np.random.default_rng(1).random((10, 30), dtype=np.float32)
    y = np.arange(10) % 7
    step = compare_step.jax_step(x, y, [(W.copy(), b.copy()) for W, b in net.params])
    jax_loss = step()
    loss = net.step(x, y, 0.01)
    assert abs(jax_loss - loss) < 1e-5
    for (W, b), (W2, b2) in zip(net.params, step.params()):
        np.testing.assert_allclose(W2, W, atol=1e-6)
        np.testing.assert_allclose(b2, b, atol=1e-6)
    assert compare_step.installed("jax-jit") and compare_step.installed("fastff")


def test_compare_step_times_jax_beside_fastff_when_installed():
    import pytest
    pytest.importorskip("jax")
    out = subprocess.run([sys.executable, str(SCRIPT), "--batches", "10", "--rounds", "1",
                          "--contenders", "fastff", "jax-jit"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[2].startswith("batch 10: fastff ") and "jax-jit" in lines[2]
    assert lines[3].endswith("x jax-jit")


def test_the_breakdown_accounts_for_the_step_and_restores_the_kernels():
    sys.path.insert(0, str(SCRIPT.parent))
    import breakdown
    from fastff.kernels import cpu
    from fastff.kernels.cpu import blas
    modules = {"cpu": cpu, "blas": blas}
    before = {key: getattr(modules[key[0]], key[1]) for key in breakdown.PARTS}
    parts = breakdown.breakdown(128, steps=2)
    assert {key: getattr(modules[key[0]], key[1]) for key in breakdown.PARTS} == before
    assert set(parts) == set(breakdown.PARTS.values()) | {"step", "other"}
    timed = sum(v for k, v in parts.items() if k not in ("step", "other"))
    assert all(parts[name] > 0 for name in breakdown.PARTS.values())  # every part was seen
    assert timed + parts["other"] > 0.5 * parts["step"] and parts["other"] >= 0


def test_blas_rates_times_the_step_s_three_products_in_this_library():
    sys.path.insert(0, str(SCRIPT.parent))
    import blas_rates
    found = blas_rates.rates(20, n=48, warm_s=0.01, flop=1e6)
    assert set(found) == set(blas_rates.PRODUCTS) and all(r > 0 for r in found.values())
    assert blas_rates.libraries()[0] == "openblas"
