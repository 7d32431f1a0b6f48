"""The CUDA kernels against the NumPy reference.

Every case runs twice: on the host, where tests/cuda_host/emu.h runs the very .cu sources
through fastff.kernels.cuda's own launch code (every CI run; tiles patched small so that tiny
shapes span many blocks and K splits), and on a GPU through CuPy (marked ``cuda``: skipped
where none is usable). Counters must match the reference exactly, applied to the kernel's own
output; floats within ``atol + rtol*|ref|``.
"""
import contextlib
import tracemalloc

import numpy as np
import pytest

import fastff
from fastff import config
from fastff.errors import DeviceError, InputError
from fastff.kernels import Backend, BackwardStats, ForwardStats, LayerRates, cuda, reference as ref
from fastff.kernels.cuda.step import CUDAPlan

import cuda_emulator
from conftest import assert_close

ACTS = ["sigmoid", "tanh", "softsign", "relu", "linear"]
DTYPES = [np.float32, np.float64]
SHAPES = [(1, 7, 5), (10, 13, 9), (3, 1, 2), (17, 33, 19)]  # (batch, n_in, n_out)
SMALL = cuda_emulator.SMALL


@pytest.fixture(scope="module", params=["host", "host-concurrent",
                                        pytest.param("gpu", marks=pytest.mark.cuda)])
def rt(request, tmp_path_factory):
    """The runtime the CUDA kernels launch through: the host emulator, running the blocks of a
    launch one after another or all at once, or a GPU."""
    with cuda_emulator.runtime_for(request.param, tmp_path_factory) as runtime:
        yield runtime


def host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def layer(rng, batch, n_in, n_out, dtype, wscale=1.0):
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) * wscale / np.sqrt(n_in)).astype(dtype)
    b = (rng.standard_normal(n_out) * 0.5).astype(dtype)
    return x, W, b


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward_matches_reference(rt, rng, dtype, act, shape):
    x, W, b = layer(rng, *shape, dtype, wscale=4.0)  # large enough to saturate some units
    st = ForwardStats(shape[2], act, xp=rt.xp)
    h = cuda.dense_forward(rt.xp.asarray(x), rt.xp.asarray(W), rt.xp.asarray(b), act, stats=st)
    assert_close(host(h), ref.dense_forward(x, W, b, act), dtype)
    mine = ForwardStats(shape[2], act)
    ref.accumulate_forward_stats(host(h), mine)
    for name in ("sat_low", "sat_high", "hist", "rows"):
        np.testing.assert_array_equal(host(getattr(st, name)), getattr(mine, name), err_msg=name)
    np.testing.assert_allclose(host(st.total), mine.total, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(host(st.total_sq), mine.total_sq, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_sgd_matches_reference(rt, rng, dtype, act, shape):
    xp = rt.xp
    x, W, b = layer(rng, *shape, dtype)
    h = ref.dense_forward(x, W, b, act)
    g = rng.standard_normal(h.shape).astype(dtype)
    W1, b1 = xp.array(W), xp.array(b)  # copies: updated in place
    s1, s2 = BackwardStats(shape[2], xp=xp), BackwardStats(shape[2])
    gx1 = cuda.dense_backward_sgd(xp.asarray(x), xp.asarray(h), W1, b1, xp.asarray(g), act, 0.1,
                                  stats=s1)
    W2, b2 = W.copy(), b.copy()
    gx2 = ref.dense_backward_sgd(x, h, W2, b2, g, act, 0.1, stats=s2)
    assert_close(host(gx1), gx2, dtype, scale=np.abs(gx2).max())
    assert_close(host(W1), W2, dtype)
    assert_close(host(b1), b2, dtype)
    assert_close(host(s1.delta_total), s2.delta_total, dtype, scale=np.abs(s2.delta_total).max())
    assert_close(host(s1.delta_total_sq), s2.delta_total_sq, dtype)
    np.testing.assert_array_equal(host(s1.counts), s2.counts)
    np.testing.assert_allclose(host(s1.grad_w_total_sq), s2.grad_w_total_sq, rtol=1e-4)
    np.testing.assert_allclose(host(s1.grad_w_total), s2.grad_w_total, rtol=1e-4,
                               atol=1e-6 * np.sqrt(s2.grad_w_total_sq[0]))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("method", ["diag_hessian", "grad_variance"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_second_order_matches_reference(rt, rng, dtype, method, act, shape):
    if method == "grad_variance" and shape[0] < 2:
        pytest.skip("a variance over the batch needs 2 rows")
    xp = rt.xp
    x, W, b = layer(rng, *shape, dtype)
    h = ref.dense_forward(x, W, b, act)
    g = (rng.standard_normal(h.shape) / shape[0]).astype(dtype)
    c = (rng.random(h.shape) / shape[0]).astype(dtype) if method == "diag_hessian" else None
    W1, b1, W2, b2 = xp.array(W), xp.array(b), W.copy(), b.copy()
    r1 = LayerRates(*W.shape, method, dtype, xp=xp)
    r2 = LayerRates(*W.shape, method, dtype)
    s1, s2 = BackwardStats(shape[2], xp=xp), BackwardStats(shape[2])
    for _ in range(2):  # the second step reads the running estimates the first one left
        out1 = cuda.dense_backward_second_order(
            xp.asarray(x), xp.asarray(h), W1, b1, xp.asarray(g), act, 0.01, r1,
            curv_h=None if c is None else xp.asarray(c), stats=s1)
        out2 = ref.dense_backward_second_order(x, h, W2, b2, g, act, 0.01, r2, curv_h=c, stats=s2)
    for mine, theirs in zip(out1, out2):
        assert (mine is None) == (theirs is None)
        if theirs is not None:
            assert_close(host(mine), theirs, dtype, scale=np.abs(theirs).max())
    for mine, theirs in ((W1, W2), (b1, b2), (r1.W, r2.W), (r1.b, r2.b)):
        assert_close(host(mine), theirs, dtype, scale=np.abs(theirs).max())
    assert r1.steps == r2.steps == 2
    np.testing.assert_array_equal(host(s1.counts), s2.counts)
    np.testing.assert_allclose(host(s1.grad_w_total_sq), s2.grad_w_total_sq, rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_without_grad_x_updates_the_same(rt, rng, dtype):
    xp = rt.xp
    x, W, b = layer(rng, 10, 13, 9, dtype)
    h = ref.dense_forward(x, W, b, "tanh")
    g = rng.standard_normal(h.shape).astype(dtype)
    Wa, Wb = xp.array(W), xp.array(W)
    args = (xp.asarray(x), xp.asarray(h))
    assert cuda.dense_backward_sgd(*args, Wa, xp.array(b), xp.asarray(g), "tanh", 0.2,
                                   compute_grad_x=False) is None
    cuda.dense_backward_sgd(*args, Wb, xp.array(b), xp.asarray(g), "tanh", 0.2)
    np.testing.assert_array_equal(host(Wa), host(Wb))


@pytest.mark.parametrize("cost", ["softmax_nll", "softmax_quadratic"])
@pytest.mark.parametrize("shape", [(10, 9), (1, 2), (37, 10)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_costs_match_reference(rt, rng, dtype, shape, cost):
    z = (rng.standard_normal(shape) * 5).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    loss, g = getattr(cuda, f"{cost}_unchecked")(rt.xp.asarray(z), rt.xp.asarray(y))
    if rt.xp is not np:
        assert isinstance(loss, rt.xp.ndarray)  # stays on the device until someone reads it
    l2, g2 = getattr(ref, cost)(z, y)
    assert abs(float(loss) - l2) <= 1e-5 * max(1.0, abs(l2))
    assert_close(host(g), g2, dtype)
    assert getattr(cuda, cost)(rt.xp.asarray(z), rt.xp.asarray(y))[0] == pytest.approx(l2, rel=1e-5)


def test_kernels_give_the_same_bits_every_time(rt, rng):
    xp = rt.xp
    x, W, b = layer(rng, 17, 33, 19, np.float32)
    outs = []
    for _ in range(2):
        st, Wd = ForwardStats(19, "tanh", xp=xp), xp.array(W)
        h = cuda.dense_forward(xp.asarray(x), Wd, xp.asarray(b), "tanh", stats=st)
        bs = BackwardStats(19, xp=xp)
        gx = cuda.dense_backward_sgd(xp.asarray(x), h, Wd, xp.array(b), h, "tanh", 0.1, stats=bs)
        outs.append([host(a) for a in (h, st.total, st.hist, gx, Wd, bs.delta_total, bs.grad_w_total_sq)])
    for a, c in zip(*outs):
        np.testing.assert_array_equal(a, c)


def test_public_cuda_kernels_check_their_arguments(rt, rng):
    xp = rt.xp
    x, W, b = layer(rng, 10, 13, 9, np.float32)
    with pytest.raises(InputError, match="made for 3 units"):
        cuda.dense_forward(xp.asarray(x), xp.asarray(W), xp.asarray(b), "tanh",
                           stats=ForwardStats(3, "tanh", xp=xp))
    with pytest.raises(InputError, match=r"labels must lie in \[0, 9\)"):
        cuda.softmax_nll(xp.asarray(x[:, :9]), xp.asarray(np.full(10, 9)))
    with pytest.raises(InputError, match="lr must be a positive number"):
        cuda.dense_backward_sgd(xp.asarray(x), xp.asarray(x[:, :9]), xp.asarray(W),
                                xp.asarray(b), xp.asarray(x[:, :9]), "tanh", -1.0)
    if xp is not np:  # on a GPU, host arrays are refused rather than copied
        with pytest.raises(DeviceError, match="cupy"):
            cuda.dense_forward(x, xp.asarray(W), xp.asarray(b), "tanh")


_cuda_model = cuda_emulator.cuda_mlp


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softsign", "relu"])
def test_whole_steps_through_the_cuda_kernels_match_the_reference(rt, rng, act):
    sizes = [11, 17, 13, 5]
    net = _cuda_model(rt, sizes, act, "float64")
    twin = fastff.MLP(sizes, activation=act, dtype="float64", seed=4, kernels="reference")
    stats, twin_stats = net.new_stats(weight_grad=True), twin.new_stats(weight_grad=True)
    for _ in range(3):
        x = rng.standard_normal((10, 11))
        y = rng.integers(0, 5, 10)
        assert net.step(x, y, 0.1, stats) == pytest.approx(twin.step(x, y, 0.1, twin_stats), rel=1e-9)
    for (W1, b1), (W2, b2) in zip(net.params, twin.params):
        np.testing.assert_allclose(host(W1), W2, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(host(b1), b2, rtol=1e-9, atol=1e-12)
    for mine, theirs in zip(stats.summary(), twin_stats.summary()):
        assert mine == pytest.approx(theirs, rel=1e-7, nan_ok=True)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softsign", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_fused_backward_pass_matches_the_reference_and_a_layer_at_a_time(rt, rng, monkeypatch,
                                                                            act, dtype):
    """The layer path's backward pass forms each hidden layer's delta, bias step and statistics
    in the dC/dx epilogue of the layer above, and the output layer's bias step in the cost's
    launch (config.CUDA_FUSED_BACKWARD): through several row tiles and K splits (the emulator's
    small tiles: batch 13 is 4 row tiles), it steps as the reference does and as the same
    kernels a layer at a time do, with no delta launch."""
    monkeypatch.setattr(config, "CUDA_STEP_PATH", "layers")
    monkeypatch.setattr(config, "CUDA_GRAPH", False)
    # 3 classes: the output bias step's row groups (the emulator's blocks are 8 threads)
    sizes = [11, 17, 13, 19, 3 if act in ("softsign", "relu") else 5]
    loss = "quadratic" if act == "sigmoid" else "nll"
    fused, alone = (_cuda_model(rt, sizes, act, dtype, loss) for _ in range(2))
    twin = fastff.MLP(sizes, activation=act, dtype=dtype, seed=4, kernels="reference", loss=loss)
    nets = {True: fused, False: alone, None: twin}
    stats = {k: net.new_stats(weight_grad=True) for k, net in nets.items()}
    losses = {k: [] for k in nets}
    for _ in range(3):
        x = rng.standard_normal((13, 11)).astype(dtype)
        y = rng.integers(0, sizes[-1], 13)
        for key, net in nets.items():
            monkeypatch.setattr(config, "CUDA_FUSED_BACKWARD", bool(key))
            before = len(getattr(rt, "launches", ()))
            losses[key].append(net.step(x, y, 0.1, stats[key]))
            if key is not None and rt.xp is np:
                deltas = [n for n, _, _ in rt.launches[before:] if n.startswith("dense_backward_d")]
                assert len(deltas) == (0 if key else len(sizes) - 1), deltas
    rel = 1e-9 if dtype == np.float64 else 2e-5
    for key in (True, False):
        assert losses[key] == pytest.approx(losses[None], rel=rel)
        for (W1, b1), (W2, b2) in zip(nets[key].params, twin.params):
            assert_close(host(W1), W2, dtype)
            assert_close(host(b1), b2, dtype)
        for mine, theirs in zip(stats[key].summary(), stats[None].summary()):
            assert mine == pytest.approx(theirs, rel=1e-7 if dtype == np.float64 else 1e-3,
                                         abs=1e-12, nan_ok=True)
    for (W1, b1), (W2, b2) in zip(fused.params, alone.params):  # the same deltas: W's bits agree
        assert_close(host(W1), host(W2), dtype, scale=1e-3)      # after the biases' last bits
        assert_close(host(b1), host(b2), dtype, scale=1e-3)


def test_the_persistent_step_gives_the_same_bits_for_any_grid(rt, rng):
    xp = rt.xp
    data = [(xp.asarray(rng.standard_normal((10, 13)).astype(np.float32)),
             xp.asarray(rng.integers(0, 5, 10))) for _ in range(3)]
    runs = []
    for grid in (None, 1, 3):
        net = _cuda_model(rt, [13, 40, 40, 5], "tanh", "float32")
        stats = net.new_stats(weight_grad=True)
        for k, (x, y) in enumerate(data):
            net.step_unchecked(x, y, 0.1, stats)
            assert net.plan.launch is not None  # the persistent path ran it
            if k == 0 and grid:
                net.plan.launch.grid = grid
        runs.append([host(a) for W, b in net.params for a in (W, b)]
                    + [host(a) for s in stats.forward + stats.backward for a in s.arrays()])
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["diag_hessian", "grad_variance"])
def test_whole_second_order_steps_through_the_cuda_kernels_match_the_reference(rt, rng, method):
    sizes = [11, 17, 13, 5]
    net = _cuda_model(rt, sizes, "tanh", "float64")
    twin = fastff.MLP(sizes, activation="tanh", dtype="float64", seed=4, kernels="reference")
    rates, twin_rates = net.new_rates(method), twin.new_rates(method)
    for _ in range(3):
        x = rng.standard_normal((10, 11))
        y = rng.integers(0, 5, 10)
        assert net.step(x, y, 0.01, rates=rates) == pytest.approx(
            twin.step(x, y, 0.01, rates=twin_rates), rel=1e-9)
    for (W1, b1), (W2, b2) in zip(net.params, twin.params):
        np.testing.assert_allclose(host(W1), W2, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(host(b1), b2, rtol=1e-9, atol=1e-12)


# -- ThreadSanitizer: the same sources, built with -fsanitize=thread, on a few cases ----------
_TSAN_SCRIPT = """
from fastff.kernels import BackwardStats, ForwardStats, LayerRates
rng = np.random.default_rng(1)
for act in ("tanh", "relu"):
    x = rng.standard_normal((10, 13)); W = rng.standard_normal((13, 9)); b = np.zeros(9)
    st = ForwardStats(9, act)
    h = cuda.dense_forward(x, W, b, act, stats=st)
    cuda.dense_backward_sgd(x, h, W, b, h, act, 0.1, stats=BackwardStats(9))
    for method in ("diag_hessian", "grad_variance"):
        cuda.dense_backward_second_order(
            x, h, W, b, h / 10, act, 0.1, LayerRates(13, 9, method, np.float64),
            curv_h=np.abs(h) / 10 if method == "diag_hessian" else None, stats=BackwardStats(9))
    cuda.softmax_nll(h, rng.integers(0, 9, 10))
from fastff.kernels.cuda import shapeset as device_shapeset
device_shapeset.render((1, 2), 0, 6, False, (1.0, 0.0))
print("done")
"""


def _tsan_run(tmp_path, src=None):
    with pytest.MonkeyPatch.context() as mp:  # the build takes its tile sizes from config
        for key, value in SMALL.items():
            mp.setattr(config, key, value)
        return cuda_emulator.tsan_run(tmp_path, _TSAN_SCRIPT, src=src)


def test_thread_sanitizer_finds_no_race(tsan_available):
    out = _tsan_run(tsan_available)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-4000:]
    assert "ThreadSanitizer" not in out.stderr, out.stderr[-4000:]


def test_thread_sanitizer_finds_a_missing_syncthreads(tsan_available, tmp_path):
    # the check itself: drop the barrier between staging a GEMM tile and reading it
    src = cuda.source()
    anchor = "    store_slices<T, TRANS_B, MODE>(va, vb, tid, as, bs);\n    __syncthreads();"
    assert anchor in src
    out = _tsan_run(tmp_path, src=src.replace(anchor, anchor.replace("__syncthreads();", "")))
    assert out.returncode == 66 and "data race" in out.stderr, out.stderr[-3000:]


@pytest.mark.parametrize("balanced", [False, True])
def test_shapeset_on_the_device_draws_the_cpus_bits(rt, monkeypatch, balanced):
    # the counter stream's CUDA twin: the same pixels, labels and object counts, bit for bit,
    # across the counter's 2^32 carry and with a grid smaller than the images (grid-stride)
    from fastff.data import shapeset
    from fastff.kernels.cuda import shapeset as device_shapeset
    monkeypatch.setattr(device_shapeset, "_MAX_GRID", 37)
    key = shapeset.counter_key(11, 0)
    for first, n, scale in ((0, 64, shapeset.SCALES["unit"]),
                            (2 ** 32 - 30, 61, shapeset.SCALES["symmetric"])):
        want = shapeset.render_counter(key, first, n, balanced, scale)
        got = device_shapeset.render(key, first, n, balanced, scale)
        for name, a, b in zip(("x", "labels", "n_objects"), got, want):
            np.testing.assert_array_equal(host(a), b, err_msg=name)
    # what the kernel would write out of bounds, or read as a key, is refused first
    x, labels, n_objects = device_shapeset.render(key, 0, 4, balanced, shapeset.SCALES["unit"])
    for bad, match in (((x[:3], labels, n_objects), "x must be float32 of shape"),
                       ((x, labels.astype(rt.xp.int32), n_objects), "labels must be int64"),
                       ((x, labels, n_objects[:2]), "n_objects must be int64")):
        with pytest.raises(InputError, match=match):
            device_shapeset.render(key, 0, 4, balanced, shapeset.SCALES["unit"], *bad)
    for args, match in ((((1, 2 ** 32), 0, 4), "key"), ((key, -1, 4), "first"),
                        ((key, 0, -4), "n must be"), ((key, 2 ** 63 - 2, 4), "first")):
        with pytest.raises(InputError, match=match):
            device_shapeset.render(*args, balanced, shapeset.SCALES["unit"])
        with pytest.raises(InputError, match=match):
            shapeset.render_counter(*args, balanced)


def _host_cuda_backend(monkeypatch):
    """device='cpu' trains through the CUDA kernels on the host emulator, with the loss kept
    as a device value (checked when the trainer logs, as on a GPU)."""
    from fastff import kernels
    emulated = Backend("cpu", "cpu", "fastff.kernels.cuda", plan_class=CUDAPlan,
                       loss_on_device=True)
    monkeypatch.setitem(kernels._BACKENDS, "cpu", emulated)
    return emulated


def test_training_through_the_cuda_kernels_follows_the_cpu_run(rt, monkeypatch, tmp_path):
    if rt.xp is not np:
        pytest.skip("on a GPU: see test_training_on_the_gpu")
    from test_model_train import tiny_data
    opts = dict(dataset=tiny_data(), lr=0.1, updates=40, eval_every=10, monitor_every=20,
                dtype="float64", progress=False)
    cpu_run = fastff.train("9x2", **opts)
    _host_cuda_backend(monkeypatch)
    cuda_run = fastff.train("9x2", **opts, out_dir=tmp_path)
    assert cuda_run.model.backend.module is cuda
    _assert_follows(cpu_run, cuda_run)


def _assert_follows(cpu_run, cuda_run):
    """Two float64 runs, on the CPU kernels and through the CUDA ones: the same history and
    weights to rounding."""
    for a, b in zip(cpu_run.history, cuda_run.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9, nan_ok=True)
        assert a["valid_error"] == b["valid_error"]
    for (W1, _), (W2, _) in zip(cpu_run.model.params, cuda_run.model.params):
        np.testing.assert_allclose(W1, W2, rtol=1e-9, atol=1e-12)


def test_shapeset_batches_drawn_by_the_cuda_kernels_train_as_on_the_cpu(rt, monkeypatch):
    # the counter stream: the emulated CUDA backend renders its batches with shapeset_render
    # and follows the CPU run, which renders them with Numba
    if rt.xp is not np:
        pytest.skip("on a GPU: see test_training_on_the_gpu")
    opts = dict(dataset="shapeset", lr=0.05, updates=12, eval_every=6, monitor_every=0,
                dtype="float64", progress=False, batch_size=7,
                data_options=dict(valid_size=30, test_size=30, generator="counter"))
    cpu_run = fastff.train("5x2", **opts)
    _host_cuda_backend(monkeypatch)
    before = sum(name == "shapeset_render" for name, _, _ in rt.launches)
    cuda_run = fastff.train("5x2", **opts)
    assert sum(name == "shapeset_render" for name, _, _ in rt.launches) - before == 12
    assert len(cpu_run.history) == len(cuda_run.history) == 3
    _assert_follows(cpu_run, cuda_run)


def _many_configs(device, out=None):
    """Five runs for train_many: three of one shape and activation (one launch a step), one of
    another activation and one of another shape (a launch each)."""
    from test_model_train import tiny_data
    base = dict(dataset=tiny_data(), updates=30, eval_every=10, monitor_every=15,
                progress=False, device=device)
    configs = [dict(base, lr=0.1, seed=1), dict(base, lr=0.05, seed=2, init="standard"),
               dict(base, lr=0.2, seed=3, dataset=tiny_data(seed=5)),
               dict(base, lr=0.1, seed=4, activation="softsign"),
               dict(base, lr=0.1, seed=5, arch="7x3")]
    for i, c in enumerate(configs):
        c.setdefault("arch", "9x2")
        if out is not None:
            c["out_dir"] = out / f"run{i}"
    return configs


def _train_alone(config):
    config = dict(config)
    return fastff.train(config.pop("arch"), **config)


def _signal_at(monkeypatch, update, seed):
    """SIGINT raised in the step of update ``update`` of the run of ``seed`` (as Ctrl-C would
    come); returns the real Trainer.stepped, to put back."""
    import signal
    from fastff.training.trainer import Trainer
    real = Trainer.stepped

    def stepped(self, k, loss, parallel=None):
        if k == update and self.v.seed == seed:
            signal.raise_signal(signal.SIGINT)
        return real(self, k, loss, parallel)

    monkeypatch.setattr(Trainer, "stepped", stepped)
    return real


@contextlib.contextmanager
def _device_memory(rt, free):
    """The emulated device with ``free`` bytes left (its memory is this process's heap, as
    tracemalloc counts it)."""
    tracemalloc.start()
    try:
        rt.memory = tracemalloc.get_traced_memory()[0] + free
        yield
    finally:
        rt.memory = None
        tracemalloc.stop()


def test_train_many_gives_each_net_the_bits_of_training_it_alone(rt, monkeypatch, tmp_path):
    # the lockstep: the three nets of one shape step in one persistent launch, yet each gets
    # exactly the history, weights and statistics of training it alone on the same device
    if rt.xp is np:
        _host_cuda_backend(monkeypatch)
    device = "cpu" if rt.xp is np else "cuda"
    alone = [_train_alone(c) for c in _many_configs(device)]
    before = len(rt.launches) if rt.xp is np else 0
    many = fastff.train_many(_many_configs(device, tmp_path))
    if rt.xp is np:
        steps = [name for name, _, _ in rt.launches[before:] if name.startswith("train_steps")]
        assert len(steps) == 3 * 30 + 5, len(steps)  # 3 launches a round; 5 warm-up steps
    for a, b in zip(alone, many):
        np.testing.assert_equal([dict(r, seconds=0, monitor_seconds=0) for r in a.history],
                                [dict(r, seconds=0, monitor_seconds=0) for r in b.history])
        for (W1, b1), (W2, b2) in zip(a.model.params, b.model.params):
            np.testing.assert_array_equal(host(W1), host(W2))
            np.testing.assert_array_equal(host(b1), host(b2))
        assert len(a.stats) == len(b.stats) == 3
        for s1, s2 in zip(a.stats, b.stats):
            assert s1.update == s2.update and s1.loss == s2.loss
            for key in s1.scalars:
                np.testing.assert_array_equal(s1.scalars[key], s2.scalars[key])
    assert all((tmp_path / f"run{i}" / "checkpoint.npz").exists() for i in range(5))


def test_train_many_keeps_going_when_one_run_diverges(rt, monkeypatch, tmp_path):
    if rt.xp is not np:
        pytest.skip("emulated backend only")
    _host_cuda_backend(monkeypatch)
    configs = _many_configs("cpu", tmp_path)[:3]
    for c in configs:
        c.update(activation="relu", init="normal")
    configs[1].update(lr=1e4, arch="64x3")  # diverges alone
    configs[2].update(lr=1e30)  # diverges in the lockstep group of run 0, which goes on
    out = fastff.train_many(configs, errors="return")
    assert isinstance(out[0], fastff.training.Run) and out[0].history[-1]["update"] == 30
    assert isinstance(out[1], fastff.DivergenceError) and isinstance(out[2], fastff.DivergenceError)
    assert "checkpoint" in str(out[2])
    with pytest.raises(fastff.DivergenceError):
        fastff.train_many([dict(c, overwrite=True) for c in configs])


def test_train_many_stops_every_run_at_a_checkpoint_on_a_signal(rt, monkeypatch, tmp_path):
    # SIGINT during the lockstep, after one run of the group has finished: every other run
    # finishes its step and writes its checkpoint; resumed, each ends where an uninterrupted
    # run ends
    if rt.xp is not np:
        pytest.skip("emulated backend only")
    from fastff.training.trainer import Trainer
    _host_cuda_backend(monkeypatch)
    configs = _many_configs("cpu", tmp_path)[:3]
    configs[2].update(updates=10, eval_every=5, monitor_every=5)
    real = _signal_at(monkeypatch, 12, seed=2)  # the group's second run: the first has stepped
    with pytest.raises(fastff.Interrupted, match="at updates 13, 13; configs 0, 1 stopped"):
        fastff.train_many(configs)
    monkeypatch.setattr(Trainer, "stepped", real)
    for i, update in ((0, 13), (1, 13), (2, 10)):
        assert fastff.record.RunDir(tmp_path / f"run{i}").load_checkpoint()[1] == update
    resumed = fastff.train_many([dict(c, resume=True) for c in configs])
    alone = [_train_alone(dict(c, out_dir=None)) for c in configs]
    for a, b in zip(alone, resumed):
        for (W1, _), (W2, _) in zip(a.model.params, b.model.params):
            np.testing.assert_array_equal(W1, W2)


@pytest.mark.parametrize("memory", ["plenty", "one run"])
def test_train_many_trains_in_waves_the_memory_holds(rt, monkeypatch, tmp_path, memory):
    # the emulated device's memory (the process's heap, counted by tracemalloc): with room for
    # one run at a time each run trains in a wave of its own, and still gets the bits of
    # training it alone
    if rt.xp is not np:
        pytest.skip("emulated backend only")
    import warnings
    _host_cuda_backend(monkeypatch)
    configs = _many_configs("cpu", tmp_path)[:3]
    alone = [_train_alone(dict(c, out_dir=None)) for c in configs]
    before = len(rt.launches)
    with _device_memory(rt, 1 << 30 if memory == "plenty" else 0), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        many = fastff.train_many(configs)
    said = [str(w.message) for w in caught if "holds" in str(w.message)]
    steps = [name for name, _, _ in rt.launches[before:] if name.startswith("train_steps")]
    if memory == "plenty":
        assert not said
        assert len(steps) == 30 + 3  # one launch a round for the group; a warm-up step a run
    else:
        assert said == ["fastff.train_many: the device holds 1 of these 3 runs at once; the "
                        "other 2 train after them",
                        "fastff.train_many: the device holds 1 of these 2 runs at once; the "
                        "other 1 train after them"]
        assert len(steps) == 3 * 30 + 3
    for a, b in zip(alone, many):
        for (W1, b1), (W2, b2) in zip(a.model.params, b.model.params):
            np.testing.assert_array_equal(W1, W2)
            np.testing.assert_array_equal(b1, b2)


def test_train_many_interrupted_in_a_wave_names_the_runs_not_started(rt, monkeypatch, tmp_path):
    # one run a wave; SIGINT in the first: it stops at a checkpoint, and the message says which
    # runs had not started (they have no record to resume)
    if rt.xp is not np:
        pytest.skip("emulated backend only")
    _host_cuda_backend(monkeypatch)
    configs = _many_configs("cpu", tmp_path)[:3]
    _signal_at(monkeypatch, 12, seed=1)
    with _device_memory(rt, 0), pytest.warns(RuntimeWarning, match="holds 1 of these 3"), \
            pytest.raises(fastff.Interrupted, match=r"interrupted at update 13; configs 0 "
                          r"stopped at their checkpoints; configs 1, 2 had not started: call "
                          r"train_many again with resume=True in every config"):
        fastff.train_many(configs)
    assert not (tmp_path / "run1").exists() and not (tmp_path / "run2").exists()
    # the same call with resume=True continues run 0 and starts runs 1 and 2
    monkeypatch.undo()
    _host_cuda_backend(monkeypatch)
    with pytest.warns(RuntimeWarning, match="holds no run yet: resume=True starts it"):
        resumed = fastff.train_many([dict(c, resume=True) for c in configs])
    for run, config in zip(resumed, configs):
        alone = _train_alone(dict(config, out_dir=None))
        assert [r["test_error"] for r in run.history] == [r["test_error"] for r in alone.history]
        for (W1, b1), (W2, b2) in zip(run.model.params, alone.model.params):
            np.testing.assert_array_equal(W1, W2)
            np.testing.assert_array_equal(b1, b2)


def test_train_many_a_run_the_full_device_refuses_waits_for_the_next_wave(rt, monkeypatch,
                                                                           tmp_path):
    # the device runs out of memory while the second run is set up (CuPy raises a
    # MemoryError): that run trains after the first, in the folder its first try had begun,
    # with the bits of training it alone
    if rt.xp is not np:
        pytest.skip("emulated backend only")
    from fastff.training.trainer import Trainer
    _host_cuda_backend(monkeypatch)
    configs = _many_configs("cpu", tmp_path)[:2]
    alone = [_train_alone(dict(c, out_dir=None)) for c in configs]
    real, refused = Trainer.compile, []

    def compile(self, parallel=None):
        if self.v.seed == 2 and not refused:
            refused.append(True)
            raise MemoryError("out of memory allocating 1,048,576 bytes")
        return real(self, parallel)

    monkeypatch.setattr(Trainer, "compile", compile)
    with pytest.warns(RuntimeWarning, match="holds 1 of these 2 runs"):
        many = fastff.train_many(configs)
    assert refused
    for a, b in zip(alone, many):
        for (W1, _), (W2, _) in zip(a.model.params, b.model.params):
            np.testing.assert_array_equal(W1, W2)
    # alone on the device and still refused: the run fails with the error, the others go on
    monkeypatch.setattr(Trainer, "compile", lambda self, parallel=None: (_ for _ in ()).throw(
        MemoryError("out of memory")) if self.v.seed == 2 else real(self, parallel))
    out = fastff.train_many([dict(c, out_dir=None) for c in configs[1:] + configs[:1]],
                            errors="return")
    assert isinstance(out[0], MemoryError) and isinstance(out[1], fastff.training.Run)


def test_train_many_runs_sharing_a_dataset_at_different_updates(rt, monkeypatch, tmp_path):
    # two runs of one group draw from one Dataset object (whose device batches live in its
    # reused buffers) at different updates: each still trains on its own batches
    if rt.xp is not np:
        pytest.skip("emulated backend only")
    _host_cuda_backend(monkeypatch)
    first, second = _many_configs("cpu")[:2]
    for out in ("alone", "many"):
        _train_alone(dict(first, updates=10, out_dir=tmp_path / out))
    alone = _train_alone(dict(first, updates=30, out_dir=tmp_path / "alone", resume=True))
    many = fastff.train_many([dict(first, updates=30, out_dir=tmp_path / "many", resume=True),
                              second])
    assert first["dataset"] is second["dataset"]
    for (W1, _), (W2, _) in zip(alone.model.params, many[0].model.params):
        np.testing.assert_array_equal(W1, W2)
    for (W1, _), (W2, _) in zip(_train_alone(second).model.params, many[1].model.params):
        np.testing.assert_array_equal(W1, W2)


def test_a_failing_step_of_one_run_is_its_own(rt, monkeypatch):
    # a run the persistent step cannot take (batch 20) when config forces that step: its own
    # step fails; the group beside it trains on
    if rt.xp is not np:
        pytest.skip("emulated backend only")
    _host_cuda_backend(monkeypatch)
    monkeypatch.setattr(config, "CUDA_STEP_PATH", "persistent")
    configs = _many_configs("cpu")[:3]
    configs[2]["batch_size"] = 20
    out = fastff.train_many(configs, errors="return")
    assert [type(r).__name__ for r in out] == ["Run", "Run", "InputError"]
    assert "CUDA_STEP_MAX_BATCH" in str(out[2])


def test_a_sweep_pack_trains_in_lockstep_and_resumes_run_by_run(rt, monkeypatch, tmp_path):
    # a sweep's task on a GPU worker: its pack of runs through train_many; interrupted (as a
    # killed worker would be), the task run again resumes each run from its own checkpoint
    if rt.xp is not np:
        pytest.skip("emulated backend only")
    from fastff.sweeps import _run
    from fastff.training.trainer import Trainer
    _host_cuda_backend(monkeypatch)
    points = [{k: v for k, v in c.items()} for c in _many_configs("cpu")[:3]]
    dirs = [str(tmp_path / f"run{i}") for i in range(3)]
    real = _signal_at(monkeypatch, 12, seed=1)
    with pytest.raises(fastff.Interrupted):
        _run(points, dirs, 1, True)
    monkeypatch.setattr(Trainer, "stepped", real)
    out = _run(points, dirs, 1, True)
    assert [row["status"] for row, _ in out] == ["done"] * 3
    assert [row["resumed_from"] for row, _ in out] == [13] * 3
    for point, (row, files) in zip(points, out):
        alone = _train_alone(point)
        assert row["test_error"] == alone.final["test_error"] and files is None
    assert all((tmp_path / f"run{i}" / "sweep_status.json").is_file() for i in range(3))


def test_a_finite_dataset_is_staged_once_not_uploaded_every_step(rt, monkeypatch):
    # the launch audit's twin for data: through the CUDA kernels, the training set, the
    # evaluation sets and each epoch's permutation cross to the device once; no batch does.
    # 200 rows at batch 7 for 90 updates: 4 epochs, three batches spanning an epoch's end.
    if rt.xp is not np:
        pytest.skip("emulated backend only")
    from test_model_train import tiny_data
    opts = dict(dataset=tiny_data(), lr=0.1, updates=90, eval_every=30, monitor_every=0,
                batch_size=7, progress=False)
    cpu_run = fastff.train("9x2", **opts)
    backend = _host_cuda_backend(monkeypatch)
    uploads = []
    real = backend.to_device

    class OnDevice(np.ndarray):  # what to_device made, and every array made from one
        pass

    def to_device(a, dtype=None):
        if not isinstance(a, OnDevice):
            uploads.append(np.shape(a))
        return real(a, dtype).view(OnDevice)

    monkeypatch.setattr(backend, "to_device", to_device)
    cuda_run = fastff.train("9x2", **opts)
    inputs = [u for u in uploads if len(u) == 2 and u[1] == 12]  # not the parameters
    assert sorted(inputs) == [(100, 12), (100, 12), (200, 12)], uploads
    rows = [u[0] for u in uploads if len(u) == 1]
    # labels: the training set's and each evaluation set's once, then epoch permutations
    # (200 rows) and the indices of the three batches that span an epoch's end (7)
    assert rows.count(200) == 1 + 4 and rows.count(7) == 3, rows
    for a, b in zip(cpu_run.history, cuda_run.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, nan_ok=True)
        assert a["valid_error"] == b["valid_error"] and a["test_error"] == b["test_error"]


def test_divergence_found_at_the_log_names_the_update(rt, monkeypatch, tmp_path):
    if rt.xp is not np:
        pytest.skip("emulated backend only")
    from test_model_train import tiny_data
    _host_cuda_backend(monkeypatch)
    with pytest.raises(fastff.DivergenceError, match=r"at update \d+ .*checkpoint"):
        fastff.train("64x3", dataset=tiny_data(), activation="relu", init="normal", lr=1e4,
                     updates=60, eval_every=20, out_dir=tmp_path, progress=False, monitor_every=0)
    state, update, history = fastff.record.RunDir(tmp_path).load_checkpoint()
    assert all(np.isfinite(v).all() for k, v in state.items() if k != "sizes")


def _unit_range_data():
    """tiny_data squashed into [0, 1], where denoising pre-training reconstructs it."""
    from fastff.data.base import ArrayDataset
    from test_model_train import tiny_data
    d = tiny_data()
    squash = lambda split: ((1 / (1 + np.exp(-split[0]))).astype(np.float32), split[1])  # noqa: E731
    return ArrayDataset("unit blobs", squash(d.train), squash(d.valid), squash(d.test), 3, 0)


def test_pretraining_through_the_cuda_kernels_follows_the_cpu_run(rt, monkeypatch):
    if rt.xp is not np:
        pytest.skip("on a GPU: see test_pretraining_on_the_gpu")
    opts = dict(dataset=_unit_range_data(), activation="sigmoid", lr=0.1, updates=20,
                pretrain="dae", pretrain_updates=15, dtype="float64", progress=False,
                monitor_every=0)
    cpu_run = fastff.train("9x2", **opts)
    _host_cuda_backend(monkeypatch)
    cuda_run = fastff.train("9x2", **opts)
    assert cuda_run.model.backend.module is cuda
    for a, b in zip(cpu_run.pretrain, cuda_run.pretrain):
        assert a["reconstruction"] == pytest.approx(b["reconstruction"], rel=1e-9)
    for (W1, _), (W2, _) in zip(cpu_run.model.params, cuda_run.model.params):
        np.testing.assert_allclose(W1, W2, rtol=1e-9, atol=1e-12)


@pytest.mark.cuda
def test_pretraining_on_the_gpu():
    opts = dict(dataset=_unit_range_data(), activation="tanh", lr=0.1, updates=20,
                pretrain="dae", pretrain_updates=15, dtype="float64", progress=False)
    cpu_run = fastff.train("9x2", **opts)
    gpu_run = fastff.train("9x2", **opts, device="cuda")
    again = fastff.train("9x2", **opts, device="cuda")
    # the masking noise is drawn on the GPU (its own generator, seeded from the run's seed):
    # the same seed gives the same bits there, and costs near the CPU's, whose masks differ
    for a, b, c in zip(cpu_run.pretrain, gpu_run.pretrain, again.pretrain):
        assert b["reconstruction"] == c["reconstruction"]
        assert a["reconstruction"] == pytest.approx(b["reconstruction"], rel=0.25)
    for (W1, _), (W2, _) in zip(gpu_run.model.params, again.model.params):
        np.testing.assert_array_equal(host(W1), host(W2))


@pytest.mark.cuda
def test_a_monitor_of_device_arrays():
    import cupy
    from test_model_train import tiny_data
    data = tiny_data()
    net = fastff.MLP([data.n_in, 9, data.n_classes], device="cuda", dtype="float64", seed=1)
    x, y = data.test
    mon = fastff.Monitor(cupy.asarray(x), cupy.asarray(y))
    m = mon(net, update=0)
    cpu = fastff.measure(fastff.MLP([data.n_in, 9, data.n_classes], dtype="float64", seed=1),
                         x, y, update=0)
    np.testing.assert_allclose(m.scalars["act_mean"], cpu.scalars["act_mean"], rtol=1e-9)


@pytest.mark.cuda
def test_training_on_the_gpu(tmp_path):
    from test_model_train import tiny_data
    opts = dict(dataset=tiny_data(), lr=0.1, updates=40, eval_every=10, monitor_every=20,
                dtype="float64", progress=False)
    cpu_run = fastff.train("9x2", **opts)
    gpu_run = fastff.train("9x2", **opts, device="cuda", out_dir=tmp_path)
    for a, b in zip(cpu_run.history, gpu_run.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9, nan_ok=True)
    state, update, _ = fastff.record.RunDir(tmp_path).load_checkpoint()
    assert update == 40 and isinstance(state["W0"], np.ndarray)
