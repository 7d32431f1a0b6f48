"""Every Numba kernel against the NumPy reference, on fresh random inputs."""
import numba
import numpy as np
import pytest
from numba import njit

import fastff
from fastff import kernels
from fastff.errors import DeviceError, InputError
from fastff.kernels import BackwardStats, ForwardStats, cpu, reference as ref
from fastff.kernels.cpu.epilogues import stats_tile

from conftest import assert_close

ACTS = ["sigmoid", "tanh", "softsign", "relu", "linear"]
DTYPES = [np.float32, np.float64]
# (batch, n_in, n_out): odd and prime sizes. Batches up to 16 take the register-tile loops: 7
# splits into forward row tiles of 4 + 3, 16 into 6 + 5 + 5 and a one-row-of-W backward tile;
# 37 and 41 take the large-batch (BLAS) path.
SHAPES = [(1, 7, 5), (10, 131, 97), (3, 1, 2), (7, 67, 41), (16, 129, 70), (37, 64, 33),
          (41, 17, 131)]


def layer(rng, batch, n_in, n_out, dtype, wscale=1.0):
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) * wscale / np.sqrt(n_in)).astype(dtype)
    b = (rng.standard_normal(n_out) * 0.5).astype(dtype)
    return x, W, b


def assert_forward_stats_equal(a, b):
    for name in ("sat_low", "sat_high", "hist", "rows"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_allclose(a.total, b.total, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.total_sq, b.total_sq, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("blocks", ["default", "small"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward_matches_reference(rng, request, dtype, act, shape, blocks):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    x, W, b = layer(rng, *shape, dtype, wscale=4.0)  # large enough to saturate some units
    st = ForwardStats(shape[2], act)
    h = cpu.dense_forward(x, W, b, act, stats=st)
    assert h.dtype == dtype and h.shape == (shape[0], shape[2])
    assert_close(h, ref.dense_forward(x, W, b, act), dtype)
    # counters agree exactly with the reference applied to the kernel's own output
    st_ref = ForwardStats(shape[2], act)
    ref.accumulate_forward_stats(h, st_ref)
    assert_forward_stats_equal(st, st_ref)


@njit
def _stats_in_slabs(h, st, hist, slab):
    stats_tile(h, 0, h.shape[0], 0, h.shape[1], st, hist, slab)


@pytest.mark.parametrize("slab", [1, 3, 7, 1 << 30])
def test_forward_stats_counted_in_slabs_of_rows_match_the_reference(rng, slab):
    # the saturation counts go through int32 counters a slab of rows at a time (so that no batch
    # can overflow them); any slab gives the reference's counts exactly
    from fastff.kernels.cpu.epilogues import forward_stat_args
    h = np.tanh(4 * rng.standard_normal((23, 37))).astype(np.float32)
    h[5, 3] = np.nan
    st, st_ref = ForwardStats(37, "tanh"), ForwardStats(37, "tanh")
    hist = np.zeros(st.bins, np.int64)
    _stats_in_slabs(h, forward_stat_args(st, np.float32), hist, slab)
    st.hist += hist
    st.rows[0] += h.shape[0]
    ref.accumulate_forward_stats(h, st_ref)
    assert_forward_stats_equal(st, st_ref)


def test_forward_stats_see_saturation(rng):
    x, W, b = layer(rng, 10, 50, 40, np.float32, wscale=20.0)
    st = ForwardStats(40, "tanh")
    cpu.dense_forward(x, W, b, "tanh", stats=st)
    s = st.summary()
    assert s["sat_low"] > 0.2 and s["sat_high"] > 0.2  # heavily saturated by construction
    assert st.hist.sum() == 400 and st.hist[0] > 0 and st.hist[-1] > 0


@pytest.mark.parametrize("blocks", ["default", "small"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_sgd_matches_reference(rng, request, dtype, act, shape, blocks):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    x, W, b = layer(rng, *shape, dtype)
    h = ref.dense_forward(x, W, b, act)
    grad_h = rng.standard_normal(h.shape).astype(dtype)
    W1, b1, W2, b2 = W.copy(), b.copy(), W.copy(), b.copy()
    s1, s2 = BackwardStats(shape[2]), BackwardStats(shape[2])
    gx1 = cpu.dense_backward_sgd(x, h, W1, b1, grad_h, act, 0.1, stats=s1)
    gx2 = ref.dense_backward_sgd(x, h, W2, b2, grad_h, act, 0.1, stats=s2)
    assert_close(gx1, gx2, dtype, scale=np.abs(gx2).max())
    assert_close(W1, W2, dtype)
    assert_close(b1, b2, dtype)
    # float sums of values that may differ in their last bits: compared with tolerances
    assert_close(s1.delta_total, s2.delta_total, dtype, scale=np.abs(s2.delta_total).max())
    assert_close(s1.delta_total_sq, s2.delta_total_sq, dtype)
    np.testing.assert_allclose(s1.grad_w_total_sq, s2.grad_w_total_sq, rtol=1e-4)
    np.testing.assert_allclose(s1.grad_w_total, s2.grad_w_total, rtol=1e-4,
                               atol=1e-6 * np.sqrt(s2.grad_w_total_sq[0]))
    assert s1.rows[0] == s2.rows[0] == shape[0]


@pytest.mark.parametrize("measured", ["nothing", "delta", "delta and dC/dW"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_batch_update_paths_match_reference(rng, dtype, measured):
    # above CPU_SMALL_BATCH_MAX the update is one GEMM accumulating into W, or, when dC/dW is
    # measured, blocks of rows of the gradient; both against the reference, with and without dC/dx
    x, W, b = layer(rng, 53, 67, 131, dtype)
    h = ref.dense_forward(x, W, b, "tanh")
    g = rng.standard_normal(h.shape).astype(dtype)
    stats = {"nothing": lambda: None, "delta": lambda: BackwardStats(131, weight_grad=False),
             "delta and dC/dW": lambda: BackwardStats(131)}[measured]
    W2, b2 = W.copy(), b.copy()
    s2 = BackwardStats(131)
    gx2 = ref.dense_backward_sgd(x, h, W2, b2, g, "tanh", 0.3, stats=s2)
    for want_gx in (True, False):
        W1, b1, s1 = W.copy(), b.copy(), stats()
        gx1 = cpu.dense_backward_sgd(x, h, W1, b1, g, "tanh", 0.3, stats=s1,
                                     compute_grad_x=want_gx)
        assert_close(W1, W2, dtype)
        assert_close(b1, b2, dtype)
        if want_gx:
            assert_close(gx1, gx2, dtype, scale=np.abs(gx2).max())
        else:
            assert gx1 is None
        if measured == "delta and dC/dW":
            np.testing.assert_allclose(s1.grad_w_total_sq, s2.grad_w_total_sq, rtol=1e-4)
        if s1 is not None:
            assert_close(s1.delta_total_sq, s2.delta_total_sq, dtype)


def test_backward_uses_old_weights_and_skips_grad_x(rng):
    x, W, b = layer(rng, 10, 33, 21, np.float64)
    h = ref.dense_forward(x, W, b, "tanh")
    g = rng.standard_normal(h.shape)
    expected = (g * (1 - h * h)) @ W.T
    W1 = W.copy()
    gx = cpu.dense_backward_sgd(x, h, W1, b.copy(), g, "tanh", 0.5)
    np.testing.assert_allclose(gx, expected, rtol=1e-12)
    W2 = W.copy()
    assert cpu.dense_backward_sgd(x, h, W2, b.copy(), g, "tanh", 0.5, compute_grad_x=False) is None
    np.testing.assert_array_equal(W1, W2)  # same update either way


def test_stats_do_not_change_the_update(rng):
    x, W, b = layer(rng, 10, 64, 48, np.float32)
    h = ref.dense_forward(x, W, b, "softsign")
    g = rng.standard_normal(h.shape).astype(np.float32)
    W1, W2 = W.copy(), W.copy()
    cpu.dense_backward_sgd(x, h, W1, b.copy(), g, "softsign", 0.1)
    cpu.dense_backward_sgd(x, h, W2, b.copy(), g, "softsign", 0.1, stats=BackwardStats(48))
    np.testing.assert_array_equal(W1, W2)


@pytest.mark.parametrize("cost", ["softmax_nll", "softmax_quadratic"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(10, 9), (1, 2), (37, 10)])
def test_softmax_costs_match_reference(rng, dtype, shape, cost):
    z = (rng.standard_normal(shape) * 5).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    l1, g1 = getattr(cpu, cost)(z, y)
    l2, g2 = getattr(ref, cost)(z, y)
    assert abs(l1 - l2) <= 1e-5 * max(1, abs(l2))
    assert_close(g1, g2, dtype)
    l3, g3 = getattr(cpu, f"{cost}_unchecked")(z, y)
    assert l3 == l1 and np.array_equal(g3, g1)


@pytest.mark.parametrize("cost", ["softmax_nll", "softmax_quadratic"])
def test_softmax_costs_are_stable_for_huge_logits(cost):
    z = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    loss, g = getattr(cpu, cost)(z, np.array([0]))
    assert loss == pytest.approx(0.0, abs=1e-6) and np.isfinite(g).all()
    # a confident wrong answer: the quadratic cost's gradient vanishes (its plateau, Fig. 5),
    # the log-likelihood's does not
    loss, g = getattr(cpu, cost)(np.array([[30.0, 0.0]]), np.array([1]))
    if cost == "softmax_quadratic":
        assert loss == pytest.approx(1.0) and np.abs(g).max() < 1e-12
    else:
        assert loss == pytest.approx(30.0) and np.abs(g).max() == pytest.approx(1.0)


@pytest.mark.parametrize("batch", [10, 40])
def test_kernels_are_deterministic_for_any_thread_count(rng, batch):
    # work is split into fixed blocks and partial sums are added in block order, so neither a
    # second run nor another number of threads changes a bit
    x, W, b = layer(rng, batch, 300, 150, np.float32)
    g = rng.standard_normal((batch, 150)).astype(np.float32)
    threads = numba.get_num_threads()
    outs = []
    try:
        for n in (threads, 1, threads):
            numba.set_num_threads(n)
            fs, W1, bs = ForwardStats(150, "tanh"), W.copy(), BackwardStats(150)
            h = cpu.dense_forward(x, W, b, "tanh", stats=fs)
            gx = cpu.dense_backward_sgd(x, h, W1, b.copy(), g, "tanh", 0.1, stats=bs)
            outs.append((h, fs.hist, fs.total, W1, gx, bs.delta_total, bs.grad_w_total_sq))
    finally:
        numba.set_num_threads(threads)
    for run in outs[1:]:
        for a, c in zip(outs[0], run):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("dtype", DTYPES)
def test_epilogues_give_the_same_bits_for_any_column_chunk(rng, dtype):
    # threads share a pass by chunks of columns; one thread takes the whole width in one chunk
    # (large batches). Every sum runs down its column in row order and the histogram counts are
    # integers, so the chunking changes no bit
    from fastff.activations import TANH
    from fastff.kernels.cpu import epilogues as ep
    B, n = 23, 37
    s = (3 * rng.standard_normal((B, n))).astype(dtype)
    s[4, 5] = np.nan
    b = rng.standard_normal(n).astype(dtype)
    grad_h = rng.standard_normal((B, n)).astype(dtype)
    results = []
    for chunk in (1, 7, 16, n, 128):
        for fwd, delta_bias in ((ep.forward_epilogue, ep.delta_bias),
                                (ep.forward_epilogue_serial, ep.delta_bias_serial)):
            h, fs, bs, b1 = s.copy(), ForwardStats(n, "tanh"), BackwardStats(n), b.copy()
            fwd(h, np.empty((0, 1, 1), dtype), b1, TANH, chunk, ep.forward_stat_args(fs, dtype))
            delta = np.empty_like(h)
            delta_bias(grad_h, h, delta, b1, TANH, dtype(0.1), chunk, ep.delta_stat_args(bs))
            results.append((h, delta, b1, fs.sat_low, fs.sat_high, fs.total, fs.total_sq,
                            fs.hist, fs.rows, bs.delta_total, bs.delta_total_sq, bs.counts))
    for run in results[1:]:
        for a, c in zip(results[0], run):
            np.testing.assert_array_equal(a, c)


def _placed(a, offset):
    """A copy of ``a`` whose data starts ``offset`` bytes past a cache line."""
    buf = np.empty(a.nbytes + 128, np.uint8)
    start = -buf.ctypes.data % 64 + offset
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [10, 37])
def test_where_an_array_starts_changes_no_bit(rng, dtype, batch):
    # fastff's own arrays start on a cache line (kernels/memory.py); a caller's may start
    # anywhere an element may, and must give the same numbers
    x, W, b = layer(rng, batch, 131, 97, dtype)
    g = rng.standard_normal((batch, 97)).astype(dtype)
    outs = []
    for offset in (0, 4 if dtype == np.float32 else 8, 16, 32):
        xs, Ws, bs, gs = (_placed(a, offset) for a in (x, W, b, g))
        h = cpu.dense_forward(xs, Ws, bs, "tanh", out=_placed(np.empty((batch, 97), dtype), offset))
        gx = cpu.dense_backward_sgd(xs, h, Ws, bs, gs, "tanh", 0.1)
        outs.append((h, gx, Ws, bs))
    for run in outs[1:]:
        for a, c in zip(outs[0], run):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("shape", [0, 1, (7, 13), (0, 5), (3, 1000), (1000, 1000)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_memory_arrays_start_on_a_cache_line(shape, dtype):
    from fastff.kernels import memory
    a = memory.empty(shape, dtype)
    assert a.flags.c_contiguous and a.flags.writeable
    assert a.size == 0 or a.ctypes.data % 64 == 0  # an empty array has no data to place
    assert a.shape == np.empty(shape).shape and a.dtype == dtype
    z = memory.zeros(shape, dtype)
    assert (z.size == 0 or z.ctypes.data % 64 == 0) and not z.any()
    src = np.arange(np.prod(shape, dtype=int)).reshape(shape)
    c = kernels.get_backend("cpu").copy(src, dtype)
    del src
    import gc
    gc.collect()  # the view keeps its buffer alive
    np.testing.assert_array_equal(c, np.arange(c.size).reshape(c.shape).astype(dtype))
    assert c.size == 0 or c.ctypes.data % 64 == 0


def test_a_scratch_array_is_one_buffer_per_thread_and_name():
    import threading
    from fastff.kernels import memory
    a = memory.scratch("t", (3, 5, 7), np.float32)
    assert a.shape == (3, 5, 7) and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.flags.writeable and a.ctypes.data % 64 == 0
    b = memory.scratch("t", (2, 5, 7), np.float32)  # the same memory again
    assert b.ctypes.data == a.ctypes.data and b.shape == (2, 5, 7)
    c = memory.scratch("t", (4, 50, 7), np.float64)  # more than it has: a larger buffer
    assert c.shape == (4, 50, 7) and c.dtype == np.float64 and c.ctypes.data % 64 == 0
    c[...] = 1.0
    assert memory.scratch("t", (0, 5, 7), np.float32).shape == (0, 5, 7)
    u, t = memory.scratch("u", (3, 5, 7), np.float32), memory.scratch("t", (3, 5, 7), np.float32)
    assert not np.shares_memory(u, t)  # two names, two buffers
    other = []
    worker = threading.Thread(target=lambda: other.append(memory.scratch("t", (3, 5, 7),
                                                                         np.float32)))
    worker.start()
    worker.join()
    assert not np.shares_memory(other[0], memory.scratch("t", (3, 5, 7), np.float32))


def test_the_small_batch_forward_in_threads_at_once_matches_the_reference():
    # its partial products live in a per-thread buffer: threads at once must not share it
    import concurrent.futures
    rng = np.random.default_rng(11)
    cases = [(rng.standard_normal((b, n_in), np.float32),
              (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
              rng.standard_normal(n_out).astype(np.float32))
             for b, n_in, n_out in [(3, 257, 131), (10, 300, 97), (7, 131, 263), (1, 509, 64)]]
    want = [ref.dense_forward(x, W, b, "tanh") for x, W, b in cases]

    def run(i):
        x, W, b = cases[i % len(cases)]
        return i % len(cases), [cpu.dense_forward(x, W, b, "tanh") for _ in range(20)]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for i, outs in pool.map(run, range(8)):
            for out in outs:
                assert_close(out, want[i], np.float32)


_STEP_FAULTS = """
import resource
import numpy as np
import fastff
net = fastff.MLP("64-1000x2-10", seed=0)
rng = np.random.default_rng(0)
x, y = rng.random((10, 64), dtype=np.float32), rng.integers(0, 10, 10)
stats = net.new_stats()
for _ in range(3):
    net.step(x, y, 0.01, stats)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    net.step(x, y, 0.01, stats)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_a_small_batch_step_touches_no_fresh_pages_in_a_dask_like_process():
    # Dask starts its workers with MALLOC_TRIM_THRESHOLD_, which keeps glibc's mmap threshold
    # at 128 KiB: an array of more than that allocated per call faults in every page each step
    # (the forward's partial products did: about 390 page faults a step, 1.5 MB)
    import os
    import subprocess
    import sys
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", _STEP_FAULTS], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) < 50 * 5, out.stdout


def test_model_arrays_start_on_a_cache_line(monkeypatch):
    # the weights, biases, workspaces, second-order rates and the outputs the kernels
    # allocate; the alignment is read when an array is made
    from fastff import config
    from fastff.kernels import memory
    for align in (64, 4096):
        monkeypatch.setattr(config, "CPU_ARRAY_ALIGN", align)
        net = fastff.MLP("13-31x2-3", seed=1)
        arrays = [a for p in net.params + net.copy().params for a in p]
        ws = net.plan.workspace(5)
        arrays += [a for name in ("h", "g", "delta") for a in ws[name]] + net.plan.curvature(5)
        rates = net.new_rates("grad_variance")
        arrays += [a for layer in rates.layers for a in (layer.W, layer.b)]
        assert all(a.ctypes.data % align == 0 for a in arrays)
    x = np.ones((3, 13), np.float32)
    assert cpu.dense_forward(x, net.params[0][0], net.params[0][1], "tanh").ctypes.data % 4096 == 0
    for value in (0, 3, 48, True, 64.0, "64"):
        monkeypatch.setattr(config, "CPU_ARRAY_ALIGN", value)
        with pytest.raises(InputError, match="CPU_ARRAY_ALIGN"):
            memory.empty(3, np.float32)


_NARROW_VECTORS = """
import numpy as np
from fastff.kernels import BackwardStats, ForwardStats, cpu, reference as ref
from fastff.kernels.cpu import simd
assert simd.VEC_BYTES == {width}
rng = np.random.default_rng(5)
for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-11)):
    for batch, n_in, n_out in ((10, 37, 29), (3, 8, 17)):
        x = rng.standard_normal((batch, n_in)).astype(dtype)
        W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
        b = rng.standard_normal(n_out).astype(dtype)
        h = cpu.dense_forward(x, W, b, "tanh")
        np.testing.assert_allclose(h, ref.dense_forward(x, W, b, "tanh"), rtol=tol, atol=tol)
        g = rng.standard_normal(h.shape).astype(dtype)
        W1, W2, b1, b2 = W.copy(), W.copy(), b.copy(), b.copy()
        gx1 = cpu.dense_backward_sgd(x, h, W1, b1, g, "tanh", 0.1)
        gx2 = ref.dense_backward_sgd(x, h, W2, b2, g, "tanh", 0.1)
        np.testing.assert_allclose(gx1, gx2, rtol=tol, atol=tol)
        np.testing.assert_allclose(W1, W2, rtol=tol, atol=tol)
print("ok")
"""


@pytest.mark.parametrize("width", [32])
def test_register_tiles_with_narrower_vectors(tmp_path, width):
    # machines without AVX-512 get 32-byte vectors: same answers, checked in a fresh process
    import os
    import subprocess
    import sys
    env = dict(os.environ, FASTFF_CPU_VECTOR_BYTES=str(width), NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _NARROW_VECTORS.format(width=width)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_fortran_and_strided_inputs_give_right_answers(rng):
    x, W, b = layer(rng, 10, 31, 17, np.float64)
    xf = np.asfortranarray(x)
    xs = np.repeat(x, 2, axis=1)[:, ::2]
    for xx in (xf, xs):
        np.testing.assert_allclose(cpu.dense_forward(xx, W, b, "tanh"),
                                   ref.dense_forward(x, W, b, "tanh"), rtol=1e-12)
    with pytest.raises(InputError, match="C-contiguous"):
        cpu.dense_backward_sgd(x, np.tanh(x @ W + b), np.asfortranarray(W), b.copy(),
                               np.ones((10, 17)), "tanh", 0.1)


@pytest.mark.parametrize("case, match", [
    ("shape", "features"), ("dtype_int", "float32 or float64"), ("float16", "float32 or float64"),
    ("nan", "NaN"), ("inf", "NaN or inf"), ("empty", "empty"), ("mixed", "dtype"),
    ("act", "valid: linear, relu, sigmoid, softsign, tanh"), ("bias", "b must have shape"),
])
def test_forward_rejects_bad_input(rng, case, match):
    x, W, b = layer(rng, 4, 6, 5, np.float32)
    act = "tanh"
    if case == "shape":
        x = x[:, :5]
    elif case == "dtype_int":
        x = np.ones((4, 6), np.int64)
    elif case == "float16":
        x = x.astype(np.float16)
    elif case == "nan":
        x[1, 2] = np.nan
    elif case == "inf":
        x[0, 0] = np.inf
    elif case == "empty":
        x = x[:0]
    elif case == "mixed":
        x = x.astype(np.float64)
    elif case == "act":
        act = "tanhh"
    elif case == "bias":
        b = b[:3]
    with pytest.raises(InputError, match=match):
        kernels.dense_forward(x, W, b, act)


def test_backward_and_softmax_reject_bad_input(rng):
    x, W, b = layer(rng, 4, 6, 5, np.float32)
    h = ref.dense_forward(x, W, b, "tanh")
    with pytest.raises(InputError, match="lr"):
        cpu.dense_backward_sgd(x, h, W, b, h, "tanh", 0.0)
    with pytest.raises(InputError, match="grad_h"):
        cpu.dense_backward_sgd(x, h, W, b, h[:, :4], "tanh", 0.1)
    with pytest.raises(InputError, match=r"\[0, 5\)"):
        cpu.softmax_nll(h, np.array([0, 1, 2, 5]))
    with pytest.raises(InputError, match="integer"):
        cpu.softmax_nll(h, np.zeros(4))
    with pytest.raises(InputError, match="4 rows"):
        cpu.softmax_nll(h, np.zeros(3, np.int64))
    for kernel in (cpu.softmax_quadratic, ref.softmax_quadratic):
        with pytest.raises(InputError, match=r"\[0, 5\)"):
            kernel(h, np.array([0, 1, 2, -1]))
        with pytest.raises(InputError, match="NaN or inf"):
            kernel(np.full_like(h, np.nan), np.zeros(4, np.int64))


def test_registry_dispatch_and_errors():
    assert kernels.get("dense_forward", "cpu") is cpu.dense_forward
    assert kernels.get("dense_forward", "reference") is ref.dense_forward
    with pytest.raises(InputError, match="valid:"):
        kernels.get("dense_forwards", "cpu")
    assert kernels.get("dense_forward", "cuda") is fastff.kernels.cuda.dense_forward
    try:
        import cupy  # noqa: F401
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy or no GPU: the CUDA kernels say what is missing
        with pytest.raises(DeviceError, match="CuPy|GPU"):
            fastff.kernels.cuda.dense_forward(None, None, None, "tanh")
    with pytest.raises(InputError, match="NumPy or CuPy"):
        kernels.backend_of([1, 2, 3])
    assert fastff.kernels.backend_of(np.zeros(2)) == "cpu"


@pytest.mark.parametrize("value", [17, -1, 2.5, True])
def test_a_small_batch_limit_beyond_the_tiles_is_refused(monkeypatch, value):
    from fastff import config
    from fastff.kernels import cpu
    monkeypatch.setattr(config, "CPU_SMALL_BATCH_MAX", value)
    x, W, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), np.zeros(5, np.float32)
    with pytest.raises(InputError, match="CPU_SMALL_BATCH_MAX is"):
        cpu.dense_forward(x, W, b, "tanh")


@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_shapes_come_from_config_at_call_time(monkeypatch, rng, dtype):
    # forward panels of 3 rows of W by 2 vectors (67 rows: the last row alone; 41 columns: wide
    # panels, a narrow one, then masked columns) and one row per backward tile: their own
    # compiled code, same answers
    from fastff import config
    monkeypatch.setattr(config, "CPU_FORWARD_W_ROWS", 3)
    monkeypatch.setattr(config, "CPU_FORWARD_W_VECS", 2)
    monkeypatch.setattr(config, "CPU_BACKWARD_W_ROWS", 1)
    x, W, b = layer(rng, 7, 67, 41, dtype)
    assert_close(cpu.dense_forward(x, W, b, "tanh"), ref.dense_forward(x, W, b, "tanh"), dtype)
    h = ref.dense_forward(x, W, b, "tanh")
    g = rng.standard_normal(h.shape).astype(dtype)
    W1, W2 = W.copy(), W.copy()
    gx1 = cpu.dense_backward_sgd(x, h, W1, b.copy(), g, "tanh", 0.1)
    gx2 = ref.dense_backward_sgd(x, h, W2, b.copy(), g, "tanh", 0.1)
    assert_close(gx1, gx2, dtype, scale=np.abs(gx2).max())
    assert_close(W1, W2, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_panels_of_any_shape_give_the_same_bits(monkeypatch, rng, dtype):
    # every element sums its terms in the order of i whatever the panel's rows and vectors
    from fastff import config
    x, W, b = layer(rng, 10, 131, 97, dtype)
    outs = []
    for w_rows, w_vecs, ahead in ((config.CPU_FORWARD_W_ROWS, config.CPU_FORWARD_W_VECS, 12),
                                  (1, 1, 0), (3, 2, 1), (4, 3, 130), (8, 1, 1000)):
        monkeypatch.setattr(config, "CPU_FORWARD_W_ROWS", w_rows)
        monkeypatch.setattr(config, "CPU_FORWARD_W_VECS", w_vecs)
        monkeypatch.setattr(config, "CPU_FWD_PREFETCH_ROWS", ahead)  # a hint: no number moves
        outs.append(cpu.dense_forward(x, W, b, "tanh"))
    for h in outs[1:]:
        np.testing.assert_array_equal(h, outs[0])


@pytest.mark.parametrize("setting, value, match", [
    ("CPU_FORWARD_W_ROWS", 0, "CPU_FORWARD_W_ROWS"),
    ("CPU_FORWARD_W_ROWS", 15, "CPU_FORWARD_W_ROWS"),
    ("CPU_FORWARD_W_ROWS", "8", "CPU_FORWARD_W_ROWS"),
    ("CPU_FORWARD_W_VECS", 0, "CPU_FORWARD_W_VECS"),
    ("CPU_FORWARD_W_VECS", 16, "CPU_FORWARD_W_VECS"),
    ("CPU_BACKWARD_W_ROWS", 0, "CPU_BACKWARD_W_ROWS"),
    ("CPU_BACKWARD_W_ROWS", 2.0, "CPU_BACKWARD_W_ROWS"),
    ("CPU_VECTOR_BYTES", 7, "CPU_VECTOR_BYTES"),
    ("CPU_FWD_PREFETCH_ROWS", -1, "CPU_FWD_PREFETCH_ROWS"),
    ("CPU_BWD_PREFETCH_ROWS", None, "CPU_BWD_PREFETCH_ROWS"),
])
def test_bad_tile_settings_are_refused(monkeypatch, setting, value, match):
    from fastff import config
    monkeypatch.setattr(config, setting, value)
    x, W, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), np.zeros(5, np.float32)
    h = (cpu.dense_forward(x, W, b, "tanh")
         if setting in ("CPU_BACKWARD_W_ROWS", "CPU_BWD_PREFETCH_ROWS") else None)
    with pytest.raises(InputError, match=match):
        if h is None:
            cpu.dense_forward(x, W, b, "tanh")
        else:
            cpu.dense_backward_sgd(x, h, W, b, np.ones_like(h), "tanh", 0.1)


def test_backends_say_what_they_can_do():
    from fastff.kernels import get_backend
    from fastff.kernels.backend import Backend
    cpu, ref = get_backend("cpu"), get_backend("reference")
    for capability in Backend.CAPABILITIES:
        assert not cpu.can(capability) and not ref.can(capability)
    # the CUDA kernels' capabilities, asked of a backend over their module (no GPU needed)
    cuda = Backend("emulated", "cpu", "fastff.kernels.cuda")
    assert all(cuda.can(c) for c in Backend.CAPABILITIES)
    assert callable(cuda.check_tf32)
    with pytest.raises(AttributeError, match="the cpu kernels cannot tf32: no check_tf32"):
        cpu.check_tf32
    net = fastff.MLP("5-4-3")  # the CPU's plan steps nets one at a time
    assert not net.plan.lockstep_applies(net, 10, None)
    with pytest.raises(NotImplementedError, match="cannot step nets in lockstep"):
        net.plan.new_lockstep()
    with pytest.raises(ValueError, match="unknown capability 'warp_drive'"):
        cpu.can("warp_drive")


def test_callers_ask_capabilities_not_module_names():
    import re
    from pathlib import Path
    root = Path(fastff.__file__).parent
    outside = [p for p in root.rglob("*.py") if "kernels" not in p.relative_to(root).parts]
    named = [f"{p.relative_to(root)}:{i}" for p in outside
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"module_name\s*==|\.name\s*[!=]=\s*[\"']cuda", line)]
    assert not named, named


def test_no_module_reaches_into_another_s_private_names():
    import re
    from pathlib import Path
    root = Path(fastff.__file__).parent
    found = []
    for p in root.rglob("*.py"):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("#")[0]
            reach = [m for m in re.findall(r"\b(\w+)\._[a-z]\w*", code)
                     if m not in ("self", "cls")]
            private_import = re.search(r"^\s*from \S+ import .*\b_[a-z]\w*", code) and \
                "_version" not in code
            if reach or private_import:
                found.append(f"{p.relative_to(root)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)
