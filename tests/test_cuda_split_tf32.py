"""Split-precision TF32 ("3xTF32") products on tensor cores: each float32 operand v is split
into big = tf32(v) and small = v - big with its low 13 bits cleared (fastff::split_tf32), and
a b is formed as three TF32 products
(config.CUDA_SPLIT_TF32; off by default until a GPU has timed it). The forward, dC/dx and
the plain-SGD update take it; the kernels are held to the float64 reference of the float32
inputs at float32's tolerance, where plain TF32 misses by about 1e-3.

On the host, tests/cuda_host/emu.h runs mma.sync as a warp and stops the run on an operand that
is not TF32, so every big and small part is checked as a GPU would read it. The tiles are the
smallest the tensor cores take (32 x 32 x 8 products, 32 x 32 updates: two warps a block), so
that small shapes span several tiles and K splits.
"""

import numpy as np
import pytest

import fastff
from fastff import config
from fastff.kernels import BackwardStats, ForwardStats, cuda, reference as ref
from fastff.kernels.cuda import fused_pass, launchers

import cuda_emulator
from conftest import assert_close
from test_cuda_tf32 import assert_the_emulator_finds_an_unrounded_operand, host, tf32

SPLIT_TILES = dict(cuda_emulator.SMALL, CUDA_GEMM_TILE=(32, 32, 8), CUDA_UPDATE_TILE=32,
                   CUDA_SPLIT_BLOCKS=24, CUDA_SPLIT_TF32=True)
SHAPES = [(19, 37, 45), (70, 9, 33), (1, 64, 7), (45, 70, 3)]  # (batch, n_in, n_out)


@pytest.fixture(scope="module", params=["host", "host-concurrent",
                                        pytest.param("gpu", marks=pytest.mark.cuda)])
def rt(request, tmp_path_factory):
    with cuda_emulator.runtime_for(request.param, tmp_path_factory, SPLIT_TILES, sms=4,
                                   seed=11) as runtime:
        yield runtime


def _operands(rng, B, K, N):
    # values with every mantissa bit in use, so that TF32's rounding shows
    x = rng.standard_normal((B, K)).astype(np.float32)
    W = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
    b = (rng.standard_normal(N) * 0.5).astype(np.float32)
    return x, W, b


def test_float32_products_choose_split_tf32_where_they_can(rt, monkeypatch):
    if not rt.has_tf32():
        pytest.skip("this GPU has no TF32")
    FP32, TF32, SPLIT = launchers.FP32, launchers.TF32, launchers.SPLIT_TF32
    assert launchers.products(np.float32, False, rt) == (SPLIT, SPLIT)
    assert launchers.products(np.float32, True, rt) == (TF32, SPLIT)  # tf32=True: plain TF32
    assert launchers.products(np.float64, False, rt) == (FP32, FP32)
    with monkeypatch.context() as mp:
        mp.setattr(config, "CUDA_SPLIT_TF32", False)
        assert launchers.products(np.float32, False, rt) == (FP32, FP32)
    with monkeypatch.context() as mp:  # an update tile the warps cannot cover
        mp.setattr(config, "CUDA_UPDATE_TILE", 16)
        assert launchers.products(np.float32, False, rt) == (FP32, FP32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ["tanh", "linear"])
def test_forward_in_split_tf32_has_float32_accuracy(rt, rng, act, shape):
    B, K, N = shape
    x, W, b = _operands(rng, B, K, N)
    xp = rt.xp
    st = ForwardStats(N, act, xp=xp)
    h = host(cuda.dense_forward(xp.asarray(x), xp.asarray(W), xp.asarray(b), act, stats=st))
    want = ref.dense_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64),
                             act)
    assert_close(h, want, np.float32)
    if K > 8:  # plain TF32 misses by about 1e-3; three products come within float32's reach
        rounded = ref.dense_forward(tf32(x).astype(np.float64), tf32(W).astype(np.float64),
                                    b.astype(np.float64), act)
        assert np.abs(h - want).max() < np.abs(rounded - want).max() / 20
    mine = ForwardStats(N, act)
    ref.accumulate_forward_stats(h, mine)
    for name in ("sat_low", "sat_high", "hist", "rows"):
        np.testing.assert_array_equal(host(getattr(st, name)), getattr(mine, name), err_msg=name)


def test_the_split_products_are_not_the_cuda_cores(rt, rng, monkeypatch):
    x, W, b = (rt.xp.asarray(a) for a in _operands(rng, 45, 70, 33))
    split = host(cuda.dense_forward(x, W, b, "linear"))
    monkeypatch.setattr(config, "CUDA_SPLIT_TF32", False)
    cores = host(cuda.dense_forward(x, W, b, "linear"))
    assert_close(split, cores, np.float32)
    assert not np.array_equal(split, cores)  # the tensor cores ran, in their own order


@pytest.mark.parametrize("shape", SHAPES)
def test_float64_in_these_tiles_stays_on_the_cuda_cores(rt, rng, shape):
    # tiles shaped as a GPU's (their threads a multiple of TK and TN): the slices' loads take
    # the strided shares (common.cuh's SliceShares), here in double and with dC/dx's Bm^T too
    B, K, N = shape
    x, W, b = (a.astype(np.float64) for a in _operands(rng, B, K, N))
    xp = rt.xp
    h = host(cuda.dense_forward(xp.asarray(x), xp.asarray(W), xp.asarray(b), "tanh"))
    assert_close(h, ref.dense_forward(x, W, b, "tanh"), np.float64)
    g = rng.standard_normal(h.shape)
    W1, b1 = xp.array(W), xp.array(b)
    gx = host(cuda.dense_backward_sgd(xp.asarray(x), xp.asarray(h), W1, b1, xp.asarray(g),
                                      "tanh", 0.1))
    delta = g * (1 - h * h)
    assert_close(gx, delta @ W.T, np.float64)
    assert_close(host(W1), W - 0.1 * (x.T @ delta), np.float64)


def test_split_tf32_keeps_nan_and_inf(rt, rng):
    # a NaN with every mantissa bit set (a GPU's own NaN) wraps the integer rounding of its big
    # part to -0: its small part must carry it. An inf's small part is inf - inf, NaN: where
    # the float64 sums are inf the split's are NaN (non-finite either way, as a diverging run's
    # check needs)
    x, W, b = _operands(rng, 19, 37, 45)
    gpu_nan = np.array([0x7FFFFFFF], np.uint32).view(np.float32)[0]
    x[3, 5], x[7, 11], W[20, 2] = gpu_nan, np.inf, -np.inf
    xp = rt.xp  # the unchecked launch: what a diverging run's weights go through
    h = host(launchers.forward_unchecked(xp.asarray(x), xp.asarray(W), xp.asarray(b), "linear"))
    with np.errstate(invalid="ignore"):  # the reference refuses non-finite input: by hand
        want = x.astype(np.float64) @ W.astype(np.float64) + b.astype(np.float64)
    bad = ~np.isfinite(want)
    assert bad[3].all() and bad[7].all() and bad[:, 2].all()
    assert np.isnan(h[bad]).all()
    assert_close(h[~bad], want[~bad], np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_in_split_tf32_has_float32_accuracy(rt, rng, shape):
    B, K, N = shape
    x, W, b = _operands(rng, B, K, N)
    h = ref.dense_forward(x, W, b, "tanh")
    g = rng.standard_normal(h.shape).astype(np.float32)
    xp = rt.xp
    W1, b1, st = xp.array(W), xp.array(b), BackwardStats(N, xp=xp)
    gx = host(cuda.dense_backward_sgd(xp.asarray(x), xp.asarray(h), W1, b1, xp.asarray(g),
                                      "tanh", 0.1, stats=st))
    delta = (g * (1 - h * h)).astype(np.float64)  # in float32, as the kernel forms it
    assert_close(gx, delta @ W.astype(np.float64).T, np.float32)
    grad_w = x.astype(np.float64).T @ delta
    assert_close(host(W1), W - 0.1 * grad_w, np.float32)
    assert_close(host(b1), b - 0.1 * delta.sum(0), np.float32)
    mine = BackwardStats(N)
    ref.accumulate_backward_stats(delta, grad_w, mine)
    for name in ("grad_w_total", "grad_w_total_sq", "delta_total", "delta_total_sq"):
        assert_close(host(getattr(st, name)), getattr(mine, name), np.float32,
                     scale=np.abs(getattr(mine, name)).max())
    np.testing.assert_array_equal(host(st.counts), mine.counts)


def test_training_in_split_tf32_follows_float32(rt, rng, monkeypatch):
    # batches of 19 take the layer-by-layer path; the same net on CUDA cores beside it
    sizes = [37, 45, 33, 5]
    if isinstance(rt, cuda_emulator.EmuRuntime):
        nets = [cuda_emulator.host_mlp(sizes, "tanh", "float32", seed=3) for _ in range(2)]
    else:
        import fastff
        nets = [fastff.MLP(sizes, activation="tanh", device="cuda", seed=3) for _ in range(2)]
    losses = {0: [], 1: []}
    for _ in range(4):
        x = rt.xp.asarray(rng.standard_normal((19, 37)).astype(np.float32))
        y = rt.xp.asarray(rng.integers(0, 5, 19))
        for split, net in enumerate(nets):
            monkeypatch.setattr(config, "CUDA_SPLIT_TF32", bool(split))
            losses[split].append(float(host(net.step(x, y, 0.1))))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)  # plain TF32: about 1e-3
    for (W0, _), (W1, _) in zip(nets[0].params, nets[1].params):
        np.testing.assert_allclose(host(W1), host(W0), atol=1e-5)
    assert any(not np.array_equal(host(W0), host(W1))
               for (W0, _), (W1, _) in zip(nets[0].params, nets[1].params))


@pytest.mark.parametrize("act, loss, split, blocks", [("tanh", "nll", True, 24),
                                                      ("relu", "quadratic", False, 19)])
def test_each_update_runs_beside_the_dc_dx_of_the_layer_below(rt, rng, monkeypatch, act, loss,
                                                               split, blocks):
    """Where the GEMM tile is square and as wide as the update's (here 32 x 32 and 32), a
    float32 model's backward pass runs each layer's update in the dC/dx launch of the layer
    below (grad_x_and_update): the cost, the top layer's dC/dx, L - 2 launches of both jobs
    and one of the last two updates (two_updates). Through several row tiles, column tiles and
    K splits, on CUDA cores and in 3xTF32, it steps as the reference does and as a layer at a
    time does, the statistics and the dC/dW sums (each job's own arrival counter) included.
    With ``blocks`` = 19 two of the dC/dx take fewer splits to leave their update room in one
    wave (gemm_geometry_beside)."""
    monkeypatch.setattr(config, "CUDA_SPLIT_TF32", split)
    monkeypatch.setattr(config, "CUDA_SPLIT_BLOCKS", blocks)
    monkeypatch.setattr(config, "CUDA_STEP_PATH", "layers")
    monkeypatch.setattr(config, "CUDA_GRAPH", False)
    sizes = [37, 70, 45, 66, 40, 5]
    L = len(sizes) - 1
    paired, alone = (cuda_emulator.cuda_mlp(rt, sizes, act, "float32", loss) for _ in range(2))
    twin = fastff.MLP(sizes, activation=act, dtype="float32", seed=4, kernels="reference",
                      loss=loss)
    nets = {True: paired, False: alone, None: twin}
    stats = {k: net.new_stats(weight_grad=True) for k, net in nets.items()}
    losses = {k: [] for k in nets}
    for _ in range(2):
        x = rng.standard_normal((45, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], 45)
        for key, net in nets.items():
            monkeypatch.setattr(config, "CUDA_FUSED_BACKWARD", bool(key))
            before = len(getattr(rt, "launches", ()))
            xs, ys = (x, y) if key is None else (rt.xp.asarray(x), rt.xp.asarray(y))
            losses[key].append(float(host(net.step(xs, ys, 0.05, stats[key]))))
            if key and rt.xp is np:
                names = [n.split("<")[0] for n, _, _ in rt.launches[before:]]
                # (these tiles' 64 threads are more than the cost's 8: its own launch)
                assert not fused_pass.fuses_cost(np.float32)
                assert names == (["dense_forward_fused"] * L + [f"softmax_{loss}"]
                                 + ["grad_x_fused"] + ["grad_x_and_update"] * (L - 2)
                                 + ["two_updates"]), names
                pairs = [grid[0] for n, grid, _ in rt.launches[before:]
                         if n.startswith("grad_x_and_update")]
                assert max(pairs) <= blocks, pairs  # each pair one wave
    for key in (True, False):
        np.testing.assert_allclose(losses[key], losses[None], rtol=2e-5)
        for (W1, b1), (W2, b2) in zip(nets[key].params, twin.params):
            assert_close(host(W1), W2, np.float32)
            assert_close(host(b1), b2, np.float32)
        for mine, theirs in zip(stats[key].summary(), stats[None].summary()):
            assert mine == pytest.approx(theirs, rel=1e-3, abs=1e-9, nan_ok=True)
    for (W1, b1), (W2, b2) in zip(paired.params, alone.params):
        assert_close(host(W1), host(W2), np.float32, scale=1e-3)
        assert_close(host(b1), host(b2), np.float32, scale=1e-3)


def test_the_emulator_finds_a_small_part_not_rounded_to_tf32(tmp_path):
    # the small part left unrounded: a GPU would silently drop its low bits
    assert_the_emulator_finds_an_unrounded_operand(
        tmp_path, "small = __uint_as_float(__float_as_uint(v - big) & 0xFFFFE000u);",
        "small = v - big;", SPLIT_TILES, False)
