"""The persistent training step (fastff/kernels/cuda/train_step.cu and step.py) on the host
emulator, whose cooperative launches run every block at once with grid barriers.

Whole steps against the NumPy reference; the same bits for any grid size and block order; the
launch audit (launches and allocations a step); and each detection of the concurrent emulator
shown by breaking something on purpose: a missing grid barrier (ThreadSanitizer), a read of
shared memory no thread wrote (NaN bytes), a cooperative grid too large to be co-resident, a
deadlock (the watchdog).
"""

import numpy as np
import pytest

import fastff
from fastff import config
from fastff.errors import InputError
from fastff.kernels import cuda, reference as ref
from fastff.kernels.cuda import step as cuda_step

# the persistent step's production geometry, read before any test shrinks it: blocks of
# STRIP x LANES threads (256), BLOCKS_PER_SM of them an SM (128 blocks on 64 SMs)
PRODUCTION = {key: getattr(config, key) for key in
              ("CUDA_STEP_STRIP", "CUDA_STEP_LANES", "CUDA_BLOCKS_PER_SM")}

import cuda_emulator
from conftest import assert_close

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="needs g++")


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    for key, value in cuda_emulator.SMALL.items():
        monkeypatch.setattr(config, key, value)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # the build takes its tile sizes from config
        for key, value in cuda_emulator.SMALL.items():
            mp.setattr(config, key, value)
        return cuda_emulator.build(tmp_path_factory.mktemp("emu-step"))


@pytest.fixture
def emulate(library, monkeypatch):
    """emulate(**options) makes an EmuRuntime of the library the CUDA runtime."""
    def make(lib=None, **options):
        options.setdefault("sms", 4)
        rt = cuda_emulator.EmuRuntime(lib or library, concurrent=True, **options)
        monkeypatch.setattr(cuda.runtimes, "_RUNTIME", rt)
        return rt
    return make


cuda_net = cuda_emulator.host_mlp


def batches(rng, sizes, batch, count, dtype):
    return [((rng.standard_normal((batch, sizes[0])) * 1.5).astype(dtype),
             rng.integers(0, sizes[-1], batch)) for _ in range(count)]


CASES = [([11, 17, 13, 5], 10), ([7, 3, 2], 1), ([5, 9, 9, 9, 4], 16), ([13, 1, 3], 7),
         ([6, 4], 3)]


@pytest.mark.parametrize("sizes, batch", CASES)
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softsign", "relu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_persistent_steps_match_the_reference(emulate, rng, dtype, act, sizes, batch):
    rt = emulate()
    net = cuda_net(sizes, act, dtype)
    twin = fastff.MLP(sizes, activation=act, dtype=dtype, seed=4, kernels="reference")
    stats, twin_stats = net.new_stats(weight_grad=True), twin.new_stats(weight_grad=True)
    for k, (x, y) in enumerate(batches(rng, sizes, batch, 3, dtype)):
        before = len(rt.launches)
        loss, twin_loss = net.step(x, y, 0.1, stats), twin.step(x, y, 0.1, twin_stats)
        assert [name for name, *_ in rt.launches[before:]] == [net.plan.launch.kernel]
        assert loss == pytest.approx(twin_loss, rel=1e-5 if dtype == "float32" else 1e-12)
        if k == 0:  # counters exactly, applied to the kernel's own outputs
            hs = net.plan.workspace(batch)["h"]
            for l, f in enumerate(stats.forward):
                mine = fastff.kernels.ForwardStats(sizes[l + 1], act)
                ref.accumulate_forward_stats(hs[l], mine)
                for name in ("sat_low", "sat_high", "hist", "rows"):
                    np.testing.assert_array_equal(getattr(f, name), getattr(mine, name))
            for b in stats.backward:
                np.testing.assert_array_equal(b.counts, [batch, 1])
    for (W1, b1), (W2, b2) in zip(net.params, twin.params):
        assert_close(W1, W2, dtype, scale=np.abs(W2).max())
        assert_close(b1, b2, dtype, scale=np.abs(b2).max() + 1e-3)
    rtol = 1e-4 if dtype == "float32" else 1e-8
    for mine, theirs in zip(stats.summary(), twin_stats.summary()):
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, rel=rtol, abs=1e-9, nan_ok=True), key


@pytest.mark.parametrize("loss", ["nll", "quadratic"])
def test_both_costs_and_no_statistics(emulate, rng, loss):
    emulate()
    sizes = [9, 12, 6]
    net, twin = cuda_net(sizes, "tanh", "float64", loss=loss), fastff.MLP(
        sizes, activation="tanh", dtype="float64", seed=4, kernels="reference", loss=loss)
    for x, y in batches(rng, sizes, 8, 3, "float64"):
        assert net.step(x, y, 0.3) == pytest.approx(twin.step(x, y, 0.3), rel=1e-12)
    for (W1, _), (W2, _) in zip(net.params, twin.params):
        np.testing.assert_allclose(W1, W2, rtol=1e-10, atol=1e-13)


def _trained(sizes, data, lr=0.2, stats=True):
    net = cuda_net(sizes, "tanh", "float32")
    st = net.new_stats(weight_grad=True) if stats else None
    losses = [float(net.step_unchecked(x, y, lr, st)) for x, y in data]
    arrays = [a.copy() for W, b in net.params for a in (W, b)]
    if st is not None:
        arrays += [a.copy() for s in (*st.forward, *st.backward) for a in s.arrays()]
    return losses, arrays


def test_the_bits_do_not_depend_on_the_grid_or_the_block_order(emulate, rng):
    sizes = [11, 17, 13, 5]
    data = batches(rng, sizes, 10, 3, np.float32)
    runs = []
    for sms, seed in ((1, 0), (2, 3), (3, 11), (5, 0), (16, 5)):
        rt = emulate(sms=sms, resident=1, seed=seed)
        runs.append(_trained(sizes, data))
        assert rt.launches[-1][1][0] == min(sms, 9)  # the grid: SMs x 1, at most 9 strips
    for losses, arrays in runs[1:]:
        assert losses == runs[0][0]
        for a, b in zip(arrays, runs[0][1]):
            np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def every_rows_library(tmp_path_factory):
    """The SMALL build with the persistent step for every row count (the module's library has
    the most rows' only, which EmuRuntime runs for any batch)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in cuda_emulator.SMALL.items():
            mp.setattr(config, key, value)
        return cuda_emulator.build(tmp_path_factory.mktemp("emu-rows"), every_rows=True)


@pytest.mark.parametrize("batch", [3, 10])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_bits_do_not_depend_on_the_rows_the_step_is_compiled_for(
        emulate, every_rows_library, rng, monkeypatch, batch, dtype):
    # a step runs the instance compiled for its batch rounded up to 4 rows; the rows past the
    # batch add exact zeros, so the instance for the most rows gives the same bits, and both
    # follow the reference
    from fastff.kernels.cuda import compiler
    sizes = [11, 17, 13, 5]
    data = batches(rng, sizes, batch, 3, dtype)
    runs = []
    for rows in (compiler.step_rows(batch), config.CUDA_STEP_MAX_BATCH):
        monkeypatch.setattr(compiler, "step_rows", lambda b, rows=rows: rows)
        rt = emulate(lib=every_rows_library)
        net = cuda_net(sizes, "tanh", dtype)
        st = net.new_stats(weight_grad=True)
        losses = [float(net.step_unchecked(x, y, 0.2, st)) for x, y in data]
        arrays = [a.copy() for W, b in net.params for a in (W, b)]
        arrays += [a.copy() for s in (*st.forward, *st.backward) for a in s.arrays()]
        runs.append((losses, arrays))
        ctype = "float" if dtype == "float32" else "double"
        assert rt.launches[-1][0] == f"train_steps<{ctype}, 2, {rows}>"
        if rows < config.CUDA_STEP_MAX_BATCH:
            _against_reference(cuda_net(sizes, "tanh", dtype), sizes, data, dtype)
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


def _against_reference(net, sizes, data, dtype="float32"):
    twin = fastff.MLP(sizes, activation="tanh", dtype=dtype, seed=4, kernels="reference")
    stats, twin_stats = net.new_stats(weight_grad=True), twin.new_stats(weight_grad=True)
    for x, y in data:
        assert net.step(x, y, 0.1, stats) == pytest.approx(twin.step(x, y, 0.1, twin_stats),
                                                           rel=1e-5)
    for (W1, b1), (W2, b2) in zip(net.params, twin.params):
        assert_close(W1, W2, dtype, scale=np.abs(W2).max())
        assert_close(b1, b2, dtype, scale=np.abs(b2).max() + 1e-3)
    for mine, theirs in zip(stats.summary(), twin_stats.summary()):
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, rel=1e-4, abs=1e-9, nan_ok=True), key


def test_the_production_block_shape_runs_the_persistent_step(emulate, rng, monkeypatch,
                                                              tmp_path_factory):
    # blocks of 8 x 32 = 256 threads, as on a GPU. Widths that are not multiples of 4 (one load
    # a weight) and a full batch of 16 rows; then widths that are (16-byte loads of W), past a
    # chunk (192 inputs forward, 256 columns of delta backward), and a batch of 10, whose
    # fourth row group has no rows; both dtypes
    for key in ("CUDA_STEP_STRIP", "CUDA_STEP_LANES"):
        monkeypatch.setattr(config, key, PRODUCTION[key])
    lib = cuda_emulator.build(tmp_path_factory.mktemp("emu-production-block"))
    rt = emulate(lib, sms=2)
    for sizes, batch, dtype in (([150, 141, 37, 9], 16, np.float32),
                                ([200, 400, 64, 8], 10, np.float32),
                                ([200, 400, 64, 8], 10, np.float64)):
        net = cuda_net(sizes, "tanh", np.dtype(dtype).name)
        _against_reference(net, sizes, batches(rng, sizes, batch, 2, dtype))
    name, grid, block = rt.launches[-1]
    assert block == (PRODUCTION["CUDA_STEP_STRIP"] * PRODUCTION["CUDA_STEP_LANES"],)
    assert block[0] == 256 and grid == (4,)


def test_the_production_grid_runs_the_persistent_step(emulate, rng):
    # 128 co-resident blocks (64 SMs x 2), every one with strips in every hidden layer, and the
    # same bits as a grid of one block
    sizes = [40, 300, 263, 9]
    data = batches(rng, sizes, 10, 2, np.float32)
    runs = []
    for sms in (64, 1):
        rt = emulate(sms=sms, resident=PRODUCTION["CUDA_BLOCKS_PER_SM"])
        runs.append(_trained(sizes, data))
        assert rt.launches[-1][1] == (sms * PRODUCTION["CUDA_BLOCKS_PER_SM"],)
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)
    rt = emulate(sms=64, resident=PRODUCTION["CUDA_BLOCKS_PER_SM"])
    _against_reference(cuda_net(sizes, "tanh", "float32"), sizes, data)


def test_several_steps_per_launch_equal_single_steps(emulate, rng):
    emulate()
    sizes = [11, 17, 13, 5]
    data = batches(rng, sizes, 10, 4, np.float32)
    one = cuda_net(sizes, "tanh", "float32")
    many = cuda_net(sizes, "tanh", "float32")
    s1, s2 = one.new_stats(weight_grad=True), many.new_stats(weight_grad=True)
    single = [float(one.step_unchecked(x, y, 0.2, s1)) for x, y in data]
    launch = cuda_step.StepLaunch(many.params, "tanh", 10, many.plan.workspace(10), s2, "nll")
    xs = np.ascontiguousarray(np.stack([x for x, _ in data]))
    ys = np.ascontiguousarray(np.stack([y for _, y in data]))
    assert list(launch.run(xs, ys, 0.2, steps=4)) == single
    for (W1, b1), (W2, b2) in zip(one.params, many.params):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    for a, b in zip(s1.forward + s1.backward, s2.forward + s2.backward):
        for u, v in zip(a.arrays(), b.arrays()):
            np.testing.assert_array_equal(u, v)


def test_the_path_is_chosen_per_step_and_can_be_forced(emulate, rng, monkeypatch):
    rt = emulate()
    sizes = [11, 17, 5]
    net = cuda_net(sizes, "tanh", "float64")
    twin = cuda_net(sizes, "tanh", "float64")
    data = batches(rng, sizes, 10, 2, np.float64)
    monkeypatch.setattr(config, "CUDA_STEP_PATH", "layers")
    for x, y in data:
        before = len(rt.launches)
        twin.step(x, y, 0.1)
        assert not any(n.startswith("train_steps") for n, *_ in rt.launches[before:])
    monkeypatch.setattr(config, "CUDA_STEP_PATH", "auto")
    for x, y in data:
        net.step(x, y, 0.1)
    for (W1, _), (W2, _) in zip(net.params, twin.params):  # the two paths: the same step
        np.testing.assert_allclose(W1, W2, rtol=1e-10, atol=1e-13)
    x, y = batches(rng, sizes, config.CUDA_STEP_MAX_BATCH + 1, 1, np.float64)[0]
    before = len(rt.launches)
    net.step(x, y, 0.1)  # too large a batch: layer by layer
    assert rt.launches[before][0].startswith("dense_forward_fused")
    net.step(x[:4], y[:4], 0.1, rates=net.new_rates("diag_hessian"))  # rates: layer by layer
    monkeypatch.setattr(config, "CUDA_STEP_PATH", "persistent")
    with pytest.raises(InputError, match="CUDA_STEP_MAX_BATCH"):
        net.step(x, y, 0.1)
    monkeypatch.setattr(config, "CUDA_STEP_PATH", "fastest")
    with pytest.raises(InputError, match="CUDA_STEP_PATH must be"):
        net.step(x[:4], y[:4], 0.1)


def test_a_changed_cuda_setting_is_refused_not_mixed(emulate, rng, monkeypatch):
    emulate()
    net = cuda_net([5, 6, 3], "tanh", "float64")
    x, y = batches(rng, [5, 6, 3], 4, 1, np.float64)[0]
    net.step(x, y, 0.1)
    monkeypatch.setattr(config, "CUDA_STEP_STRIP", 4)  # compiled in: needs another build
    with pytest.raises(RuntimeError, match="changed since this host build"):
        net.step(x, y, 0.1)


# -- the launch audit: every device allocation of the launch code goes through Runtime.empty, and
# the step's Python path reads nothing back from the device (the loss stays there) ------------
def _audit(rt, net, data, stats):
    """(launches, device allocations) of each step after the first, which builds the plan."""
    net.step_unchecked(*data[0], 0.1, stats)
    rows = []
    for x, y in data[1:]:
        n_launch, n_alloc = len(rt.launches), len(rt.allocations)
        net.step_unchecked(x, y, 0.1, stats)
        rows.append((len(rt.launches) - n_launch, len(rt.allocations) - n_alloc))
    return rows


@pytest.mark.parametrize("graph", [True, False])
@pytest.mark.parametrize("batch", [10, 128, 1024])
def test_launch_audit(emulate, rng, batch, graph, monkeypatch):
    monkeypatch.setattr(config, "CUDA_GRAPH", graph)
    rt = emulate()
    sizes = [12, 16, 16, 16, 9]  # narrow layers, the paper's shape of net
    net = cuda_net(sizes, "tanh", "float32")
    stats = net.new_stats(weight_grad=True)
    data = [(x, y) for x, y in batches(rng, sizes, batch, 3, np.float32)]
    rows = _audit(rt, net, data, stats)
    L = len(sizes) - 1
    if batch <= config.CUDA_STEP_MAX_BATCH:
        assert rows == [(1, 0)] * 2  # the persistent step: one launch, nothing allocated
    else:
        # layer by layer: 1 launch a forward (split-K, bias, f and statistics fused), the
        # output layer's with the cost (and its bias step), a dC/dx a layer but the first (each
        # forming the delta of the layer below, its bias step and statistics) and an update a
        # layer (the dC/dW sums fused), the last two in one launch: 3 L - 2, in one CUDA graph
        # from the second step; nothing allocated. (These tiles do not pair a dC/dx with an
        # update: test_cuda_split_tf32.py's do.)
        if graph:
            assert rows == [(1, 0)] * 2 and rt.launches[-1][0] == "graph"
            assert rt.launches[-1][1][0] == 3 * L - 2  # the graph's kernels
        else:
            assert rows == [(3 * L - 2, 0)] * 2


@pytest.fixture(scope="module")
def square_library(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        for key, value in cuda_emulator.SQUARE.items():
            mp.setattr(config, key, value)
        return cuda_emulator.build(tmp_path_factory.mktemp("emu-square"))


@pytest.mark.parametrize("graph", [True, False])
def test_launch_audit_where_dc_dx_and_an_update_share_a_launch(emulate, square_library, rng,
                                                               graph, monkeypatch):
    for key, value in cuda_emulator.SQUARE.items():
        monkeypatch.setattr(config, key, value)
    monkeypatch.setattr(config, "CUDA_GRAPH", graph)
    rt = emulate(square_library)
    sizes = [12, 16, 16, 16, 9]
    net = cuda_net(sizes, "tanh", "float32")
    stats = net.new_stats(weight_grad=True)
    rows = _audit(rt, net, batches(rng, sizes, 128, 3, np.float32), stats)
    L = len(sizes) - 1
    # the forward's L (the output layer's with the cost), the top layer's dC/dx, L - 2
    # launches of a dC/dx beside the update of the layer above, one of the last two updates:
    # 2 L; nothing allocated
    if graph:
        assert rows == [(1, 0)] * 2 and rt.launches[-1][0] == "graph"
        assert rt.launches[-1][1][0] == 2 * L
    else:
        assert rows == [(2 * L, 0)] * 2
        names = [n.split("<")[0] for n, _, _ in rt.launches[-2 * L:]]
        assert names[L - 1] == "dense_forward_and_cost" and names[-1] == "two_updates"
        assert names.count("grad_x_and_update") == L - 2


def test_a_reused_batch_buffer_is_checked_once_a_new_one_each_time(emulate, rng, monkeypatch):
    rt = emulate()
    sizes = [12, 16, 9]
    net = cuda_net(sizes, "tanh", "float32")
    (x, y), (x2, y2) = batches(rng, sizes, 10, 2, np.float32)
    net.step_unchecked(x, y, 0.1)
    launch, checks = net.plan.launch, []
    real = launch._check_batches
    monkeypatch.setattr(launch, "_check_batches", lambda *a: (checks.append(1), real(*a)))
    uploads = len(rt.uploads)
    for _ in range(3):  # a trainer's buffers: refilled in place, never checked or uploaded again
        x[...] = x2
        net.step_unchecked(x, y, 0.1)
    assert checks == [] and len(rt.uploads) == uploads
    net.step_unchecked(x2, y2, 0.1)  # another array: checked, its address uploaded
    assert checks == [1] and len(rt.uploads) == uploads + 1
    with pytest.raises(InputError, match="x must be a contiguous float32 array"):
        launch.run(x2[:, :-1].copy(), y2, 0.1)  # a wrong shape is still refused
    x2.dtype = np.int32  # the same array, its dtype changed in place: checked again, refused
    with pytest.raises(InputError, match="x must be a contiguous float32 array"):
        launch.run(x2, y2, 0.1)
    x2.dtype = np.float32
    net.step_unchecked(x2, y2, 0.3)  # a new rate: uploaded, the batch not checked again
    assert checks == [1, 1, 1] and len(rt.uploads) == uploads + 2


@pytest.mark.parametrize("batch", [10, 128])
def test_launch_audit_with_shapeset_drawn_on_the_device(emulate, batch):
    # a step fed by the counter stream: one launch renders the batch into buffers the dataset
    # reuses, then the step's own; nothing allocated, nothing uploaded
    from fastff import data
    rt = emulate()
    shapes = data.load("shapeset", valid_size=5, test_size=5, generator="counter")
    net = cuda_net([1024, 16, 16, 9], "tanh", "float32")
    stats = net.new_stats()
    rows = []
    for k in range(3):
        n_launch, n_alloc, n_up = len(rt.launches), len(rt.allocations), len(rt.uploads)
        x, y = shapes.device_batch(k, batch, net.backend)
        net.step_unchecked(x, y, 0.1, stats)
        rows.append((len(rt.launches) - n_launch, len(rt.allocations) - n_alloc,
                     len(rt.uploads) - n_up))
        assert rt.launches[n_launch][0] == "shapeset_render"
    assert rows[1:] == [(2, 0, 0)] * 2, rows


def test_launch_audit_of_a_lockstep_group(emulate, rng):
    # train_many's step of 3 nets of one shape: one launch for all, nothing allocated, nothing
    # uploaded while their batch buffers and rates stay; a new rate is one upload
    rt = emulate()
    sizes = [12, 16, 16, 9]
    nets = [cuda_net(sizes, "tanh", "float32", seed=s) for s in range(3)]
    stats = [n.new_stats(weight_grad=True) for n in nets[:2]] + [None]
    buffers = [(np.zeros((10, 12), np.float32), np.zeros(10, np.int64)) for _ in nets]
    lockstep = cuda_step.Lockstep()
    rows = []
    for k, data in enumerate(batches(rng, sizes, 10, 4, np.float32)):
        for x, y in buffers:  # as a dataset's reused device buffers: new contents, same place
            x[...], y[...] = data
        n_launch, n_alloc, n_up = len(rt.launches), len(rt.allocations), len(rt.uploads)
        losses = lockstep.step(nets, [x for x, _ in buffers], [y for _, y in buffers],
                               [0.1, 0.2, 0.1 if k < 3 else 0.3], stats)
        rows.append((len(rt.launches) - n_launch, len(rt.allocations) - n_alloc,
                     len(rt.uploads) - n_up))
        assert len(losses) == 3 and all(np.isfinite(l) for l in losses)
    assert rows[1:] == [(1, 0, 0), (1, 0, 0), (1, 0, 1)], rows
    assert rt.launches[-1][0].startswith("train_steps")


def test_the_captured_graph_gives_the_eager_steps_bits(emulate, rng, monkeypatch):
    emulate()
    sizes = [11, 17, 13, 5]
    nets = {g: cuda_net(sizes, "tanh", "float32") for g in (True, False)}
    stats = {g: nets[g].new_stats(weight_grad=True) for g in (True, False)}
    data = batches(rng, sizes, 19, 6, np.float32)
    losses = {}
    for g in (True, False):
        monkeypatch.setattr(config, "CUDA_GRAPH", g)
        # the rate changes between steps: the graph reads it from the device
        losses[g] = [float(nets[g].step_unchecked(x, y, 0.1 / (1 + k), stats[g]))
                     for k, (x, y) in enumerate(data)]
    assert nets[True].plan.graph is not None and nets[True].plan.graph.graph is not None
    assert losses[True] == losses[False] and len(set(losses[True])) == len(data)
    for (W1, b1), (W2, b2) in zip(nets[True].params, nets[False].params):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    for a, b in zip(stats[True].forward + stats[True].backward,
                    stats[False].forward + stats[False].backward):
        for u, v in zip(a.arrays(), b.arrays()):
            np.testing.assert_array_equal(u, v)
    # another statistics object, or none: a new graph, not the old one's arrays
    monkeypatch.setattr(config, "CUDA_GRAPH", True)
    net = nets[True]
    first = net.plan.graph
    other = net.new_stats()
    for x, y in data[:3]:
        net.step_unchecked(x, y, 0.1, other)
    assert net.plan.graph is not first and net.plan.graph.stats is other
    assert int(other.forward[0].rows[0]) == 3 * 19  # every step counted in its own object


def test_a_captured_loss_never_overwrites_a_loss_handed_out(emulate, rng, monkeypatch):
    # a ring of 4: the losses handed out stay valid for the 3 steps after theirs, and the
    # graph's own slot is never one of them (a replay rewrites it every step)
    monkeypatch.setattr(config, "CUDA_STEP_LOSS_RING", 4)
    emulate()
    sizes = [7, 9, 4]
    data = batches(rng, sizes, 18, 12, np.float64)
    monkeypatch.setattr(config, "CUDA_GRAPH", False)
    eager = cuda_net(sizes, "tanh", "float64")
    expect = [float(eager.step_unchecked(x, y, 0.2)) for x, y in data]
    monkeypatch.setattr(config, "CUDA_GRAPH", True)
    net = cuda_net(sizes, "tanh", "float64")
    held = []
    for k, (x, y) in enumerate(data):
        held.append(net.step_unchecked(x, y, 0.2))
        assert [float(v) for v in held[-3:]] == expect[max(0, k - 2):k + 1], k
    assert net.plan.graph.graph is not None


def test_a_capture_may_not_allocate(emulate):
    rt = emulate()
    with pytest.raises(fastff.DeviceError, match="allocation while a CUDA graph is captured"):
        with rt.capture():
            rt.empty(3, np.float32)
    assert rt.graph is None  # the capture is closed after an error


# -- each detection of the concurrent emulator, by breaking something on purpose -----------------
_STEP_SCRIPT = """
net = cuda_emulator.host_mlp([11, 17, 13, 5], "tanh", "float32", seed=1)
stats = net.new_stats(weight_grad=True)
rng = np.random.default_rng(2)
for _ in range(2):
    net.step(rng.standard_normal((10, 11)), rng.integers(0, 5, 10), 0.1, stats)
print("done")
"""


def _step_tsan(tmp_path, src=None, env=None, script=_STEP_SCRIPT, tiles=cuda_emulator.SMALL):
    with pytest.MonkeyPatch.context() as mp:
        for key, value in tiles.items():
            mp.setattr(config, key, value)
        return cuda_emulator.tsan_run(tmp_path, script, src=src, sms=2, env=env, tiles=tiles)


def _break(anchor, replacement, count=1):
    src = cuda.source()
    assert src.count(anchor) >= count, anchor
    return src.replace(anchor, replacement, count)


def test_thread_sanitizer_finds_no_race_in_the_persistent_step(tsan_available):
    out = _step_tsan(tsan_available)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-4000:]
    assert "ThreadSanitizer" not in out.stderr, out.stderr[-4000:]


def test_thread_sanitizer_finds_a_missing_grid_barrier(tsan_available, tmp_path):
    # the forward's last barrier: the cost then reads logits other blocks may still write
    anchor = "      if (!fastff::grid_sync(barrier, unsigned(s * 2 * L + l))) return;"
    out = _step_tsan(tmp_path, _break(anchor, ""))
    assert out.returncode == 66 and "data race" in out.stderr, out.stderr[-3000:]


_LAYERS_SCRIPT = """
net = cuda_emulator.host_mlp([11, 17, 13, 5], "tanh", "float32", seed=1)
stats = net.new_stats(weight_grad=True)
rng = np.random.default_rng(2)
for _ in range(2):  # 19 rows: the layer-by-layer kernels, several row tiles and K splits
    net.step(rng.standard_normal((19, 11)), rng.integers(0, 5, 19), 0.1, stats)
print("done")
"""


def test_thread_sanitizer_finds_no_race_in_the_fused_layer_kernels(tsan_available, tmp_path):
    # square tiles, so that the pass runs every kind of launch it has: the output layer's
    # forward with the cost (its tiles' last block), the top layer's dC/dx forming the delta
    # below, the middle layer's dC/dx beside the top layer's update, the last two updates
    # together; the second step replayed from a captured graph (its own build: the tiles are
    # compile options)
    script = _LAYERS_SCRIPT.replace('print("done")', """
launched = [n for n, _, _ in cuda.runtimes._RUNTIME.launches]
print(sum(n.startswith(("grad_x_and_update", "dense_forward_and_cost")) for n in launched),
      launched[-1])
print("done")""")
    out = _step_tsan(tmp_path, script=script, tiles=cuda_emulator.SQUARE)
    assert out.returncode == 0 and out.stdout.split() == ["2", "graph", "done"], \
        out.stdout + out.stderr[-4000:]
    assert "ThreadSanitizer" not in out.stderr, out.stderr[-4000:]


def test_thread_sanitizer_finds_an_unordered_last_block(tsan_available, tmp_path):
    # the arrival counter as a relaxed atomic (no release, no acquire): the last block of a tile
    # would read the other splits' partial products without their writes ordered before its reads
    anchor = "    last[0] = fetch_add_acq_rel(counter, 1u) == expected - 1;"
    out = _step_tsan(tmp_path, _break(anchor, "    last[0] = atomicAdd(counter, 1u) == expected - 1;"),
                     script=_LAYERS_SCRIPT)
    assert out.returncode == 66 and "data race" in out.stderr, out.stderr[-3000:]


def test_thread_sanitizer_finds_a_cost_that_does_not_wait_for_every_tile(tsan_available,
                                                                         tmp_path):
    # the output layer's tiles' arrival left out: each tile's last block would run the cost on
    # logits the other tiles may still be writing
    anchor = "    if (!fastff::last_to_arrive(counters + tiles, tiles)) return;\n"
    out = _step_tsan(tmp_path, _break(anchor, ""), script=_LAYERS_SCRIPT,
                     tiles=cuda_emulator.SQUARE)
    assert out.returncode == 66 and "data race" in out.stderr, out.stderr[-3000:]


def test_nan_shared_memory_finds_an_uninitialized_read(emulate, rng, tmp_path):
    # the step's histogram counts in shared memory that nothing zeroes: NaN bytes (0xFF) there
    # show up as counts; plain zeroed memory would have hidden the bug
    anchor = "  for (int i = threadIdx.x; i < FASTFF_MAX_BINS; i += blockDim.x) local_hist[i] = 0u;\n"
    broken = cuda_emulator.build(tmp_path, src=_break(anchor, ""))
    sizes = [11, 17, 5]
    x, y = batches(rng, sizes, 10, 1, np.float64)[0]
    hists = []
    for lib in (None, broken):
        emulate(lib)
        net = cuda_net(sizes, "tanh", "float64")
        stats = net.new_stats()
        net.step(x, y, 0.1, stats)
        hists.append(stats.forward[0].hist.copy())
    assert hists[0].sum() == 10 * 17
    assert hists[1].sum() != 10 * 17  # found: 0xFFFFFFFF + count in some bin


def test_a_cooperative_grid_too_large_to_be_resident_is_refused(emulate, rng):
    emulate(sms=2, resident=1)
    net = cuda_net([11, 17, 5], "tanh", "float64")
    x, y = batches(rng, [11, 17, 5], 10, 1, np.float64)[0]
    net.step(x, y, 0.1)
    assert net.plan.launch.grid == 2  # the plan asked for what fits
    net.plan.launch.grid, net.plan.launch.prepared = 3, None  # prepared anew, too large
    with pytest.raises(RuntimeError, match="3 blocks: more than the 2 that fit at once"):
        net.step(x, y, 0.1)


def test_the_watchdog_reports_a_deadlock(tmp_path):
    # block 1 leaves before the first grid barrier: the others would wait for it forever
    anchor = "  const int K0 = int(all[0].K);\n"
    src = _break(anchor, anchor + "  if (blockIdx.x == 1) return;\n")
    out = cuda_emulator.child_run(tmp_path, src, _STEP_SCRIPT, env={"FASTFF_EMU_WATCHDOG_S": "2"})
    assert out.returncode == 86, out.stderr[-2000:]
    assert "deadlock: block" in out.stderr and "blocks arrived" in out.stderr, out.stderr


def test_a_bounded_barrier_names_the_block_and_the_phase_that_hung(tmp_path):
    # block 1 leaves before the barrier after the forward of layer 2: with the debugging bound
    # the others give up and the step raises where the barrier waited, instead of hanging
    anchor = "          fastff::forward_strip<PB, T, fastff::LINEAR>"
    src = _break("      if (!fastff::grid_sync(barrier, unsigned(s * 2 * L + l))) return;",
                 "      if (l == 1 && blockIdx.x == 1) return;\n"
                 "      if (!fastff::grid_sync(barrier, unsigned(s * 2 * L + l))) return;")
    assert anchor in src
    script = """
from fastff import config
from fastff.errors import DeviceError
config.CUDA_BARRIER_POLLS = 20000
net = cuda_emulator.host_mlp([11, 17, 13, 5], "tanh", "float32", seed=1)
rng = np.random.default_rng(2)
try:
    net.step(rng.standard_normal((10, 11)), rng.integers(0, 5, 10), 0.1)
except DeviceError as exc:
    print("raised:", exc)
"""
    tiles = dict(cuda_emulator.SMALL, CUDA_BARRIER_POLLS=20000)
    out = cuda_emulator.child_run(tmp_path, src, script, tiles=tiles,
                                  env={"FASTFF_EMU_WATCHDOG_S": "60"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "raised: a grid barrier gave up after config.CUDA_BARRIER_POLLS = 20000 polls" \
        in out.stdout, out.stdout + out.stderr[-2000:]
    assert "waited at step 1 of 1, after the forward of layer 2 of 3" in out.stdout
    # the report decodes the barrier's word: some blocks, never the one that left
    import re
    arrived, grid = map(int, re.search(r"with (\d+) of (\d+) blocks arrived", out.stdout).groups())
    assert 1 <= arrived < grid


def test_the_barrier_s_word_tells_how_many_blocks_arrived():
    # block 0 adds 2^31 - (G - 1), every other block 1 (common.cuh, grid_sync)
    from fastff.kernels.cuda.barrier import arrivals
    assert arrivals(0, 264) == 0 and arrivals(5, 264) == 5  # block 0 not yet there
    assert arrivals(2**31 - 263, 264) == 1 and arrivals(2**31 - 263 + 5, 264) == 6
    assert arrivals(2**31, 264) == 264  # the flip: all of them
    assert arrivals(2**31 + 7, 264) == 264  # the next barrier begun before the report


def test_a_profiling_build_times_every_phase(emulate, rng, monkeypatch, tmp_path_factory):
    monkeypatch.setattr(config, "CUDA_PROFILE_STEP", True)
    lib = cuda_emulator.build(tmp_path_factory.mktemp("emu-profile"))
    emulate(lib)
    sizes = [11, 17, 13, 5]
    net = cuda_net(sizes, "tanh", "float64")
    x, y = batches(rng, sizes, 10, 1, np.float64)[0]
    net.step(x, y, 0.1)
    phases = net.plan.launch.phase_ns
    assert phases.shape == (6,) and (phases > 0).all()  # 2 L phases, each took some time


def test_the_barrier_alone_runs_its_rounds(emulate):
    from fastff.kernels.cuda import barrier
    rt = emulate(sms=2)
    grid = barrier.barrier_rounds(12, rt=rt)
    assert grid == rt.resident("barrier_rounds", barrier.threads())
    barrier.barrier_rounds(12, grid=2, rt=rt)


def test_the_emulator_finds_a_misaligned_vector_load(tmp_path):
    # shared rows padded by one element, not four: the GEMM's 16-byte loads of a row of as
    # would fault on a GPU ("misaligned address"), and the emulator stops there too
    anchor = "constexpr int GEMM_AS = FASTFF_TM + 4,"
    src = _break(anchor, anchor.replace("+ 4", "+ 1"))
    out = cuda_emulator.child_run(tmp_path, src, _LAYERS_SCRIPT)
    assert out.returncode == 88, out.stderr[-2000:]
    assert "misaligned address: a 16-byte load" in out.stderr, out.stderr[-2000:]


def test_settings_that_overflow_shared_memory_are_refused(monkeypatch):
    monkeypatch.setattr(config, "CUDA_STEP_STRIP", 8)
    monkeypatch.setattr(config, "CUDA_STEP_LANES", 32)
    assert cuda.defines()  # the defaults: 44,160 bytes in double
    monkeypatch.setattr(config, "CUDA_STEP_MAX_BATCH", 19)
    with pytest.raises(InputError, match="51288 bytes of shared memory"):
        cuda.defines()


def test_a_changed_cost_builds_a_new_launch(emulate, rng):
    emulate()
    sizes = [9, 12, 6]
    net = cuda_net(sizes, "tanh", "float64")
    twin = fastff.MLP(sizes, activation="tanh", dtype="float64", seed=4, kernels="reference")
    (x, y), (x2, y2) = batches(rng, sizes, 8, 2, "float64")
    net.step(x, y, 0.3), twin.step(x, y, 0.3)
    first = net.plan.launch
    net.loss = twin.loss = "quadratic"
    assert net.step(x2, y2, 0.3) == pytest.approx(twin.step(x2, y2, 0.3), rel=1e-12)
    assert net.plan.launch is not first and net.plan.launch.cost == cuda_step.COSTS["quadratic"]


def test_a_launch_checks_the_layout_of_its_batches(emulate, rng):
    emulate()
    net = cuda_net([11, 17, 5], "tanh", "float32")
    launch = cuda_step.StepLaunch(net.params, "tanh", 10, net.plan.workspace(10), None, "nll")
    x, y = batches(rng, [11, 17, 5], 10, 1, np.float32)[0]
    assert np.isfinite(launch.run(x, y, 0.1)).all()
    for bad_x, bad_y, steps, match in ((x[:9], y, 1, "x must be"), (x, y[:9], 1, "y must be"),
                                       (x.astype(np.float64), y, 1, "float32"),
                                       (x, y.astype(np.int32), 1, "int64"),
                                       (np.asfortranarray(np.tile(x, (2, 1))), np.tile(y, 2), 2, "contiguous"),
                                       (x, y, 0, "steps must be"), (x, y, 2, "2 steps of 10")):
        with pytest.raises(InputError, match=match):
            launch.run(bad_x, bad_y, 0.1, steps=steps)
