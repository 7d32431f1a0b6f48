"""TF32 products on tensor cores (``tf32=True``): the CUDA kernels against the NumPy reference
applied to operands rounded to TF32 as the GPU rounds them.

On the host, tests/cuda_host/emu.h runs mma.sync as a warp: its 32 lanes meet, hand over their
fragments and each forms its own outputs; an operand the kernel did not round stops the run.
The tiles are patched to the smallest the tensor-core path takes (32 x 32 x 8: two warps a
block), so that small shapes span several row and column tiles and K splits.
"""

import numpy as np
import pytest

from fastff import config
from fastff.errors import DeviceError, InputError
from fastff.kernels import BackwardStats, ForwardStats, cuda, reference as ref

import cuda_emulator
from conftest import assert_close

TF32_TILES = dict(cuda_emulator.SMALL, CUDA_GEMM_TILE=(32, 32, 8), CUDA_SPLIT_BLOCKS=24)
SHAPES = [(19, 37, 45), (70, 9, 33), (1, 64, 7)]  # (batch, n_in, n_out)


@pytest.fixture(scope="module", params=["host", "host-concurrent",
                                        pytest.param("gpu", marks=pytest.mark.cuda)])
def rt(request, tmp_path_factory):
    with cuda_emulator.runtime_for(request.param, tmp_path_factory, TF32_TILES, sms=4,
                                   seed=5) as runtime:
        yield runtime


def tf32(a):
    """a rounded to TF32 (10-bit mantissa) to nearest, ties away from zero, as
    cvt.rna.tf32.f32; NaN and inf kept."""
    u = np.asarray(a, np.float32).view(np.uint32)
    finite = (u & 0x7F800000) != 0x7F800000
    return np.where(finite, (u + np.uint32(0x1000)) & np.uint32(0xFFFFE000), u).view(np.float32)


def host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def test_tf32_rounding_of_the_reference():
    # ties away from zero, the carry into the exponent, and the values that stay
    v = np.array([1 + 2 ** -11, -(1 + 2 ** -11), 1 + 2 ** -12, 2 - 2 ** -23, 0.0, np.inf,
                  -np.inf, np.finfo(np.float32).max], np.float32)
    want = [1 + 2 ** -10, -(1 + 2 ** -10), 1.0, 2.0, 0.0, np.inf, -np.inf, np.inf]
    np.testing.assert_array_equal(tf32(v), np.array(want, np.float32))
    assert np.isnan(tf32(np.float32(np.nan)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ["tanh", "linear"])
def test_forward_in_tf32_matches_the_rounded_reference(rt, rng, act, shape):
    B, K, N = shape
    x = rng.standard_normal((B, K)).astype(np.float32)
    W = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
    b = (rng.standard_normal(N) * 0.5).astype(np.float32)
    st = ForwardStats(N, act, xp=rt.xp)
    xp = rt.xp
    h = host(cuda.dense_forward(xp.asarray(x), xp.asarray(W), xp.asarray(b), act, stats=st,
                                tf32=True))
    want = ref.dense_forward(tf32(x).astype(np.float64), tf32(W).astype(np.float64),
                             b.astype(np.float64), act)
    assert_close(h, want, np.float32)
    plain = ref.dense_forward(x, W, b, act)
    if K > 8:  # the products were rounded: about 1e-3 apart from the float32 ones
        assert np.abs(h - plain).max() > 1e-5
    mine = ForwardStats(N, act)
    ref.accumulate_forward_stats(h, mine)
    for name in ("sat_low", "sat_high", "hist", "rows"):
        np.testing.assert_array_equal(host(getattr(st, name)), getattr(mine, name), err_msg=name)


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_in_tf32_rounds_dC_dx_only(rt, rng, shape):
    B, K, N = shape
    xp = rt.xp
    x = rng.standard_normal((B, K)).astype(np.float32)
    W = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
    b = np.zeros(N, np.float32)
    h = ref.dense_forward(x, W, b, "tanh")
    g = rng.standard_normal(h.shape).astype(np.float32)
    W1, b1 = xp.array(W), xp.array(b)
    gx = host(cuda.dense_backward_sgd(xp.asarray(x), xp.asarray(h), W1, b1, xp.asarray(g),
                                      "tanh", 0.1, stats=BackwardStats(N, xp=xp), tf32=True))
    delta = g * (1 - h * h)  # in float32, as the kernel forms it before rounding it
    want = tf32(delta).astype(np.float64) @ tf32(W).astype(np.float64).T
    assert_close(gx, want, np.float32, scale=np.abs(want).max())
    W2, b2 = W.copy(), b.copy()  # the update is float32's, TF32 or not
    ref.dense_backward_sgd(x, h, W2, b2, g, "tanh", 0.1)
    assert_close(host(W1), W2, np.float32)
    assert_close(host(b1), b2, np.float32)


def _net(rt, sizes, tf32):
    if isinstance(rt, cuda_emulator.EmuRuntime):
        return cuda_emulator.host_mlp(sizes, "tanh", "float32", seed=3, tf32=tf32)
    import fastff
    return fastff.MLP(sizes, activation="tanh", device="cuda", seed=3, tf32=tf32)


def test_training_in_tf32_follows_float32(rt, rng):
    # batches of 19 take the layer-by-layer path, where tf32 applies
    sizes = [37, 45, 33, 5]
    nets = [_net(rt, sizes, t) for t in (False, True)]
    assert "tf32=True" in repr(nets[1]) and nets[1].copy().plan.hints == {"tf32": True}
    losses = {0: [], 1: []}
    for _ in range(4):
        x = rng.standard_normal((19, 37)).astype(np.float32)
        y = rng.integers(0, 5, 19)
        for i, net in enumerate(nets):
            losses[i].append(float(host(net.step(rt.xp.asarray(x), rt.xp.asarray(y), 0.1))))
    np.testing.assert_allclose(losses[1], losses[0], rtol=3e-3)
    assert losses[1] != losses[0]  # the tensor-core path ran
    for (W0, _), (W1, _) in zip(nets[0].params, nets[1].params):
        np.testing.assert_allclose(host(W1), host(W0), atol=2e-3)


def test_tf32_at_a_persistent_batch_says_it_runs_in_float32(rt, rng):
    net = _net(rt, [37, 45, 5], True)
    x = rt.xp.asarray(rng.standard_normal((10, 37)).astype(np.float32))
    y = rt.xp.asarray(rng.integers(0, 5, 10))
    with pytest.warns(UserWarning, match="at batch 10 the step runs as one persistent launch, "
                      "in float32"):
        net.step(x, y, 0.1)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once a model
        net.step(x, y, 0.1)


def test_tf32_is_refused_where_it_does_not_apply(monkeypatch):
    import fastff
    with pytest.raises(InputError, match="device='cuda'"):
        fastff.MLP("4-3-2", tf32=True)
    with pytest.raises(InputError, match="tf32 must be True or False"):
        fastff.MLP("4-3-2", tf32=1)
    with pytest.raises(InputError, match="tf32 must be True or False"):
        cuda.dense_forward(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32),
                           np.zeros(2, np.float32), "tanh", tf32="yes")
    with pytest.raises(InputError, match="parameters are float64"):
        cuda.check_tf32(np.float64)
    monkeypatch.setattr(config, "CUDA_GEMM_TILE", (16, 64, 16))
    with pytest.raises(InputError, match="rows a multiple of 32"):
        cuda.check_tf32(np.float32)

    class Turing(cuda.Runtime):  # sm_75: tensor cores, but no TF32
        def compute_capability(self):
            return "7.5"
    with pytest.raises(DeviceError, match=r"compute capability 8.0 or newer\); this GPU is 7.5"):
        cuda.check_tf32(np.float32, Turing())
    with pytest.raises(InputError, match="device='cuda'"):
        fastff.train([4], updates=1, tf32=True, progress=False)


def assert_the_emulator_finds_an_unrounded_operand(tmp_path, anchor, replacement, tiles,
                                                  tf32):
    """The sources with ``anchor`` replaced (an operand no longer rounded to TF32), built with
    ``tiles``: a forward product on tensor cores (``tf32``: plain TF32, else as the tiles'
    config says) must stop the emulator with its own status and message."""
    src = cuda.source()
    assert anchor in src
    out = cuda_emulator.child_run(tmp_path, src.replace(anchor, replacement), f"""
rng = np.random.default_rng(0)
x = rng.standard_normal((19, 37)).astype(np.float32)
W = rng.standard_normal((37, 45)).astype(np.float32)
cuda.dense_forward(x, W, np.zeros(45, np.float32), "tanh", tf32={tf32})
print("done")
""", tiles=tiles)
    assert out.returncode == 90, out.stderr[-2000:]
    assert "an mma.sync operand that is not TF32" in out.stderr, out.stderr[-2000:]


def test_the_emulator_finds_an_operand_not_rounded_to_tf32(tmp_path):
    # the operands staged without tf32_round: a GPU would silently drop their low bits
    assert_the_emulator_finds_an_unrounded_operand(
        tmp_path, "    slice[at] = tf32_round(v);", "    slice[at] = v;", TF32_TILES, True)
