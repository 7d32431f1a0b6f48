"""The large-batch products' BLAS: SciPy's OpenBLAS and Intel oneMKL against a float64
reference, and the choice between them (fastff.config.CPU_BLAS)."""
import json

import numpy as np
import pytest

import fastff
from fastff import config
from fastff.errors import InputError
from fastff.kernels import BackwardStats, ForwardStats, cpu, reference as ref
from fastff.kernels.cpu import blas, mkl

from conftest import assert_close

HAVE_MKL = mkl.load() is not None
LIBRARIES = ["openblas", pytest.param("mkl", marks=pytest.mark.skipif(
    not HAVE_MKL, reason="oneMKL is not installed (pip install 'fastff[mkl]')"))]


def operands(rng, m, k, n, dtype, layout):
    """a (m, k), b (k, n), out (m, n) laid out as the kernels pass them: C-contiguous, a
    transposed view, or columns of a wider array (a block of the weight gradient's rows)."""
    def make(rows, cols, how):
        if how == "transposed":
            return rng.standard_normal((cols, rows)).astype(dtype).T
        if how == "columns":
            return rng.standard_normal((rows, cols + 5)).astype(dtype)[:, 2:2 + cols]
        return rng.standard_normal((rows, cols)).astype(dtype)
    a_how, b_how, out_how = layout
    return make(m, k, a_how), make(k, n, b_how), make(m, n, out_how)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(37, 67, 131), (1, 1, 1), (41, 17, 3), (53, 0, 7),
                                   (257, 129, 101)])
@pytest.mark.parametrize("layout", [("c", "c", "c"), ("transposed", "c", "c"),
                                    ("c", "transposed", "c"), ("columns", "columns", "c"),
                                    ("c", "c", "columns"), ("transposed", "c", "transposed")])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gemm_in_each_library_matches_a_float64_reference(monkeypatch, rng, library, dtype,
                                                          shape, layout, beta):
    monkeypatch.setattr(config, "CPU_BLAS", library)
    a, b, out = operands(rng, *shape, dtype, layout)
    want = -0.7 * (a.astype(np.float64) @ b.astype(np.float64)) + beta * out.astype(np.float64)
    before_a, before_b = a.copy(), b.copy()
    blas.gemm(-0.7, a, b, out, beta=beta)
    scale = max(1.0, np.sqrt(shape[1]))
    assert_close(out, want, dtype, scale=scale)
    np.testing.assert_array_equal(a, before_a)
    np.testing.assert_array_equal(b, before_b)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_large_batch_layer_in_each_library_matches_the_reference(monkeypatch, rng, library,
                                                                   dtype):
    monkeypatch.setattr(config, "CPU_BLAS", library)
    batch, n_in, n_out = config.CPU_SMALL_BATCH_MAX + 21, 67, 131
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) * 2 / np.sqrt(n_in)).astype(dtype)
    b = (rng.standard_normal(n_out) * 0.5).astype(dtype)
    st, st_ref = ForwardStats(n_out, "tanh"), ForwardStats(n_out, "tanh")
    h = cpu.dense_forward(x, W, b, "tanh", stats=st)
    assert_close(h, ref.dense_forward(x, W, b, "tanh"), dtype)
    ref.accumulate_forward_stats(h, st_ref)
    np.testing.assert_array_equal(st.sat_high, st_ref.sat_high)
    g = rng.standard_normal(h.shape).astype(dtype)
    for stats in (None, BackwardStats(n_out)):  # one GEMM into W; blocks of dC/dW's rows
        W1, b1, W2, b2 = W.copy(), b.copy(), W.copy(), b.copy()
        gx1 = cpu.dense_backward_sgd(x, h, W1, b1, g, "tanh", 0.3, stats=stats)
        gx2 = ref.dense_backward_sgd(x, h, W2, b2, g, "tanh", 0.3)
        assert_close(gx1, gx2, dtype, scale=np.abs(gx2).max())
        assert_close(W1, W2, dtype)
        assert_close(b1, b2, dtype)


def test_the_library_follows_the_config_and_the_processor(monkeypatch):
    monkeypatch.setattr(config, "CPU_BLAS", "openblas")
    assert blas.library() == "openblas"
    monkeypatch.setattr(config, "CPU_BLAS", "auto")
    monkeypatch.setattr(blas, "intel_processor", lambda: False)
    assert blas.library() == "openblas"  # slower on AMD's processors: benchmarks/NOTES.md
    monkeypatch.setattr(blas, "intel_processor", lambda: True)
    assert blas.library() == ("mkl" if HAVE_MKL else "openblas")
    monkeypatch.setattr(mkl, "_LIBRARY", [None])  # as where it is not installed
    assert blas.library() == "openblas"
    monkeypatch.setattr(config, "CPU_BLAS", "mkl")
    with pytest.raises(InputError, match="oneMKL is not installed"):
        blas.library()
    with pytest.raises(InputError, match="oneMKL is not installed"):
        blas.gemm(1.0, np.ones((2, 2)), np.ones((2, 2)), np.empty((2, 2)))
    for bad in ("MKL", "blis", None, 1):
        monkeypatch.setattr(config, "CPU_BLAS", bad)
        with pytest.raises(InputError, match="config.CPU_BLAS must be one of"):
            blas.library()


def test_the_processor_vendor_is_read():
    with open("/proc/cpuinfo") as f:
        vendors = {line.split(":")[1].strip() for line in f if line.startswith("vendor_id")}
    assert blas.intel_processor() == ("GenuineIntel" in vendors)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_seed_fixes_a_large_batch_run_in_each_library(monkeypatch, tmp_path, library):
    # the run record names the library; the same seed gives the same bits (oneMKL in its
    # reproducible mode)
    monkeypatch.setattr(config, "CPU_BLAS", library)
    opts = dict(arch="40x2", dataset="shapeset", updates=40, batch_size=64, progress=False,
                seed=5, data_options={"valid_size": 64, "test_size": 64})
    runs = [fastff.train(**opts, out_dir=tmp_path / f"run{i}") for i in range(2)]
    for (W1, b1), (W2, b2) in zip(runs[0].model.params, runs[1].model.params):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    saved = json.loads((tmp_path / "run0" / "config.json").read_text())
    assert saved["threads"]["blas_library"] == library


def test_a_resume_in_another_library_warns(monkeypatch, tmp_path):
    opts = dict(arch="20x1", dataset="shapeset", updates=20, progress=False,
                batch_size=config.CPU_SMALL_BATCH_MAX + 4,
                data_options={"valid_size": 40, "test_size": 40})
    fastff.train(**opts, out_dir=tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["threads"]["blas_library"] = "elsewhere"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.warns(RuntimeWarning, match="elsewhere as its BLAS library"):
        fastff.train(**{**opts, "updates": 30}, out_dir=tmp_path, resume=True)


@pytest.mark.skipif(not HAVE_MKL, reason="oneMKL is not installed")
def test_mkl_gemm_refuses_operands_it_would_misread():
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    for args in ((a.astype(np.float64), b, np.empty((3, 5), np.float32)),
                 (a, b, np.empty((3, 5), np.float16)),
                 (a, np.ones((5, 5), np.float32), np.empty((3, 5), np.float32)),
                 (a, b, np.empty((3, 6), np.float32))):
        with pytest.raises(InputError, match="gemm takes"):
            mkl.gemm(1.0, *args)


@pytest.mark.skipif(not HAVE_MKL, reason="oneMKL is not installed")
@pytest.mark.parametrize("how", ["import", "kernel_threads"])
def test_thread_limits_reach_onemkl_loaded_after_them(how):
    # threadpoolctl limits only the libraries loaded when its block opens: oneMKL is loaded on
    # import where "auto" takes it, and by a sweep's thread block where it is forced
    import subprocess
    import sys
    script = f"""
import os, json, numpy as np
from threadpoolctl import threadpool_limits, threadpool_info
from fastff.kernels.cpu import blas
from fastff.sweeps import kernel_threads
block = threadpool_limits(1) if {how!r} == "import" else kernel_threads(1)
with block:
    a = np.ones((64, 64), np.float32)
    blas.gemm(1.0, a, a, np.empty_like(a))
    print(json.dumps([(p["internal_api"], p["num_threads"]) for p in threadpool_info()]))
"""
    env = {**__import__("os").environ, "FASTFF_CPU_BLAS": "mkl" if how == "kernel_threads"
           else "auto"}
    if how == "import" and not blas.intel_processor():
        pytest.skip("'auto' takes oneMKL on Intel processors only")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    found = dict((api, n) for api, n in json.loads(out.stdout.strip().splitlines()[-1])
                 if api in ("mkl", "openblas"))
    assert found.get("mkl") == 1, found


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_batch_epilogues_give_the_same_bits_on_every_core_and_on_one(monkeypatch, rng,
                                                                         library, dtype):
    # after oneMKL the epilogues run on the kernels' threads, a chunk of columns each; after
    # OpenBLAS on one thread, the whole width: every statistic is per column, so the bits agree
    monkeypatch.setattr(config, "CPU_BLAS", library)
    assert blas.epilogues_share_cores() == (library == "mkl")
    batch, n_in, n_out = config.CPU_SMALL_BATCH_MAX + 31, 53, 3 * config.CPU_COL_CHUNK + 7
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) * 3 / np.sqrt(n_in)).astype(dtype)
    b = (rng.standard_normal(n_out) * 0.5).astype(dtype)
    g = rng.standard_normal((batch, n_out)).astype(dtype)
    found = []
    for parallel in (True, False):
        fs, bs = ForwardStats(n_out, "tanh"), BackwardStats(n_out)
        h = cpu.forward_unchecked(x, W, b, "tanh", stats=fs, parallel=parallel)
        W1, b1 = W.copy(), b.copy()
        gx = cpu.backward_unchecked(x, h, W1, b1, g, "tanh", 0.1, stats=bs, parallel=parallel)
        found.append([h, gx, W1, b1, fs.sat_low, fs.sat_high, fs.total, fs.total_sq, fs.hist,
                      bs.delta_total, bs.delta_total_sq, bs.grad_w_total, bs.grad_w_total_sq])
    for one, other in zip(*found):
        np.testing.assert_array_equal(one, other)
