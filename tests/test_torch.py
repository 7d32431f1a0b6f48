"""PyTorch tensors in the fused kernels and the MLP (through DLPack, without copies), and
networks moved between fastff and PyTorch. Skipped where PyTorch is not installed."""
import numpy as np
import pytest

import fastff
from fastff import kernels
from fastff.errors import InputError
from fastff.kernels import cpu

torch = pytest.importorskip("torch")

SHAPES = [(7, 13, 5), (1, 3, 11), (31, 17, 2)]


def _tensors(rng, batch, n_in, n_out, dtype):
    x = torch.from_numpy(rng.standard_normal((batch, n_in)).astype(dtype))
    W = torch.from_numpy((rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype))
    b = torch.from_numpy(rng.standard_normal(n_out).astype(dtype))
    return x, W, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch,n_in,n_out", SHAPES)
@pytest.mark.parametrize("activation", ["tanh", "softsign", "sigmoid", "relu"])
def test_forward_on_tensors_equals_the_numpy_path_bit_for_bit_and_shares_out(
        batch, n_in, n_out, dtype, activation):
    rng = np.random.default_rng([batch, n_in, n_out])
    x, W, b = _tensors(rng, batch, n_in, n_out, dtype)
    stats_t = kernels.ForwardStats(n_out, activation)
    h = kernels.dense_forward(x, W, b, activation, stats=stats_t)
    assert isinstance(h, torch.Tensor) and h.dtype == x.dtype
    stats_n = kernels.ForwardStats(n_out, activation)
    ref = cpu.dense_forward(x.numpy(), W.numpy(), b.numpy(), activation, stats=stats_n)
    assert np.array_equal(h.numpy(), ref)
    for a, c in zip(stats_t.arrays(), stats_n.arrays()):
        assert np.array_equal(a, c)
    out = torch.full((batch, n_out), float("nan"), dtype=x.dtype)
    returned = kernels.dense_forward(x, W, b, activation, out=out)
    assert returned is out and torch.equal(out, h)  # written in place, the caller's tensor


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch,n_in,n_out", SHAPES)
def test_backward_updates_the_tensors_in_place_as_the_numpy_path_does(batch, n_in, n_out, dtype):
    rng = np.random.default_rng([batch, n_in, n_out, 1])
    x, W, b = _tensors(rng, batch, n_in, n_out, dtype)
    h = kernels.dense_forward(x, W, b, "tanh")
    y = torch.from_numpy(rng.integers(0, n_out, batch))
    loss, grad = kernels.softmax_nll(h, y)
    assert isinstance(grad, torch.Tensor) and isinstance(loss, float)
    W_n, b_n = W.numpy().copy(), b.numpy().copy()
    pointers = (W.data_ptr(), b.data_ptr())
    grad_x = torch.empty_like(x)
    returned = kernels.dense_backward_sgd(x, h, W, b, grad, "tanh", 0.1, grad_x=grad_x)
    ref = cpu.dense_backward_sgd(x.numpy(), h.numpy(), W_n, b_n, grad.numpy(), "tanh", 0.1)
    assert returned is grad_x and np.array_equal(grad_x.numpy(), ref)
    assert (W.data_ptr(), b.data_ptr()) == pointers  # no copy: the tensors themselves moved
    assert np.array_equal(W.numpy(), W_n) and np.array_equal(b.numpy(), b_n)
    loss_q, grad_q = kernels.softmax_quadratic(h, y)
    assert np.array_equal(grad_q.numpy(), cpu.softmax_quadratic(h.numpy(), y.numpy())[1])


def test_second_order_kernel_takes_tensors():
    rng = np.random.default_rng(3)
    x, W, b = _tensors(rng, 9, 6, 4, np.float64)
    h = kernels.dense_forward(x, W, b, "softsign")
    grad_h = torch.from_numpy(rng.standard_normal((9, 4)))
    W_n, b_n = W.numpy().copy(), b.numpy().copy()
    rates_t = kernels.LayerRates(6, 4, "grad_variance", np.float64)
    rates_n = kernels.LayerRates(6, 4, "grad_variance", np.float64)
    gx, cx = kernels.dense_backward_second_order(x, h, W, b, grad_h, "softsign", 0.05, rates_t)
    ref, _ = cpu.dense_backward_second_order(x.numpy(), h.numpy(), W_n, b_n, grad_h.numpy(),
                                             "softsign", 0.05, rates_n)
    assert isinstance(gx, torch.Tensor) and cx is None
    assert np.array_equal(gx.numpy(), ref) and np.array_equal(W.numpy(), W_n)


def test_a_fresh_result_shares_memory_with_the_tensor_returned():
    x, W, b = _tensors(np.random.default_rng(4), 5, 3, 2, np.float32)
    h = kernels.dense_forward(x, W, b, "tanh")
    view = np.from_dlpack(h)
    view[0, 0] = 123.0
    assert h[0, 0].item() == 123.0


def test_tensors_are_checked_as_numpy_arrays_are():
    x, W, b = _tensors(np.random.default_rng(5), 6, 4, 3, np.float32)
    with pytest.raises(InputError, match="requires grad.*detach"):
        kernels.dense_forward(x, torch.nn.Parameter(W), b, "tanh")
    with pytest.raises(InputError, match="bfloat16"):
        kernels.dense_forward(x.bfloat16(), W, b, "tanh")
    with pytest.raises(InputError, match="float32 or float64, got float16"):
        kernels.dense_forward(x.half(), W, b, "tanh")
    with pytest.raises(InputError, match="dtype float32 but the weights are float64"):
        kernels.dense_forward(x, W.double(), b, "tanh")
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(InputError, match="x contains NaN"):
        kernels.dense_forward(bad, W, b, "tanh")
    h = kernels.dense_forward(x, W, b, "tanh")
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    _, g = kernels.softmax_nll(h, y)
    W_T = W.t().contiguous().t()  # a transposed view: not C-contiguous
    with pytest.raises(InputError, match="W is updated in place and must be C-contiguous"):
        kernels.dense_backward_sgd(x, h, W_T, b, g, "tanh", 0.1)
    with pytest.raises(InputError, match=r"labels must lie in \[0, 3\)"):
        kernels.softmax_nll(h, y + 1)
    with pytest.raises(InputError, match="out must be a float32"):
        kernels.dense_forward(x, W, b, "tanh", out=torch.empty(6, 4))
    # a strided x is read as the NumPy path reads a strided array: the same numbers
    x_T = x.t().contiguous().t()
    assert torch.equal(kernels.dense_forward(x_T, W, b, "tanh"), h)


def test_tensor_inputs_to_the_model():
    net = fastff.MLP("12-9x2-4", activation="tanh", seed=3)
    twin = net.copy()
    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.random((8, 12), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 4, 8))
    probs = net.forward(x)
    assert isinstance(probs, torch.Tensor) and np.array_equal(probs.numpy(),
                                                               twin.forward(x.numpy()))
    assert torch.equal(net.predict(x), torch.from_numpy(twin.predict(x.numpy())))
    assert net.error(x, y) == twin.error(x.numpy(), y.numpy())
    assert isinstance(net.correct(x, y), torch.Tensor)
    assert net.step(x, y, 0.1) == twin.step(x.numpy(), y.numpy(), 0.1)
    for (W, b), (W2, b2) in zip(net.params, twin.params):
        assert np.array_equal(W, W2) and np.array_equal(b, b2)
    with pytest.raises(InputError, match="requires grad"):
        net.step(x.requires_grad_(), y, 0.1)


@pytest.mark.cuda
def test_cuda_tensors_run_on_the_cuda_kernels_without_copies():
    import cupy
    x, W, b = (t.cuda() for t in _tensors(np.random.default_rng(11), 33, 17, 9, np.float32))
    h = kernels.dense_forward(x, W, b, "tanh")
    assert isinstance(h, torch.Tensor) and h.is_cuda
    ref = kernels.dense_forward(cupy.from_dlpack(x), cupy.from_dlpack(W), cupy.from_dlpack(b),
                                "tanh")
    assert bool((cupy.from_dlpack(h) == ref).all())
    y = torch.arange(33, device="cuda") % 9
    _, g = kernels.softmax_nll(h, y)
    pointer, before = W.data_ptr(), W.clone()
    kernels.dense_backward_sgd(x, h, W, b, g, "tanh", 0.1)
    assert W.data_ptr() == pointer and not torch.equal(W, before)
    with pytest.raises(fastff.errors.DeviceError):
        kernels.dense_forward(x.cpu(), W, b, "tanh")
    net = fastff.MLP("17-8-9", device="cuda", seed=1)
    assert net.step(x, y, 0.1) > 0
    assert fastff.MLP.from_torch(net.to_torch()).device == "cuda"


# -- networks both ways ------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softsign", "relu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_torch_forward_agrees_and_a_round_trip_keeps_every_bit(activation, dtype):
    net = fastff.MLP("17-23x3-5", activation=activation, init="standard", seed=7, dtype=dtype)
    module = net.to_torch()
    assert isinstance(module, torch.nn.Sequential)
    assert str(module[0].weight.dtype) == f"torch.{dtype}"
    x = np.random.default_rng(8).random((11, 17)).astype(dtype)
    with torch.no_grad():
        probs = torch.softmax(module(torch.from_numpy(x)), 1).numpy()
    tol = 1e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(probs, net.forward(x), atol=tol, rtol=tol)
    back = fastff.MLP.from_torch(module)
    assert (back.sizes, back.activation, back.dtype) == (net.sizes, net.activation, net.dtype)
    for (W, b), (W2, b2) in zip(net.params, back.params):
        assert np.array_equal(W, W2) and np.array_equal(b, b2)
        assert W2.flags.c_contiguous and W2.flags.writeable
    again = back.to_torch()  # and PyTorch -> fastff -> PyTorch
    for p, q in zip(module.parameters(), again.parameters()):
        assert torch.equal(p, q) and p.dtype == q.dtype


@pytest.mark.parametrize("loss", ["nll", "quadratic"])
def test_one_pytorch_sgd_step_gives_the_weights_fastff_gives(loss):
    net = fastff.MLP("19-13x3-6", activation="softsign", seed=9, dtype="float64", loss=loss)
    module = net.to_torch()
    rng = np.random.default_rng(10)
    x = rng.random((10, 19))
    y = rng.integers(0, 6, 10)
    lr = 0.3
    fastff_loss = net.step(x, y, lr)
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    z = module(torch.from_numpy(x))
    target = torch.from_numpy(y)
    if loss == "nll":
        cost = torch.nn.functional.cross_entropy(z, target)
    else:
        onehot = torch.nn.functional.one_hot(target, 6).double()
        cost = 0.5 * ((torch.softmax(z, 1) - onehot) ** 2).sum(1).mean()
    opt.zero_grad()
    cost.backward()
    opt.step()
    assert abs(cost.item() - fastff_loss) < 1e-12
    stepped = fastff.MLP.from_torch(module)
    for (W, b), (W2, b2) in zip(net.params, stepped.params):
        np.testing.assert_allclose(W2, W, atol=1e-13, rtol=1e-12)
        np.testing.assert_allclose(b2, b, atol=1e-13, rtol=1e-12)


def test_from_torch_reads_flatten_and_a_final_softmax():
    nn = torch.nn
    module = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(6, 5), nn.Tanh()),
                           nn.Linear(5, 3), nn.LogSoftmax(dim=1))
    net = fastff.MLP.from_torch(module)
    assert net.sizes == [6, 5, 3] and net.activation == "tanh"
    x = torch.rand(4, 6)
    with torch.no_grad():
        np.testing.assert_allclose(net.forward(x).numpy(), module(x).exp().numpy(), atol=1e-6)
    bare = fastff.MLP.from_torch(nn.Sequential(nn.Linear(4, 2)))
    assert bare.sizes == [4, 2]


@pytest.mark.parametrize("layers,match", [
    (lambda nn: [nn.Linear(4, 3), nn.Dropout(), nn.Linear(3, 2)], "layer 1 .*Dropout.*activation"),
    (lambda nn: [nn.Linear(4, 3), nn.GELU(), nn.Linear(3, 2)], "layer 1 .*GELU"),
    (lambda nn: [nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)],
     "mixes relu, tanh"),
    (lambda nn: [nn.Linear(4, 3, bias=False), nn.Tanh(), nn.Linear(3, 2)], "no bias"),
    (lambda nn: [nn.Linear(4, 3), nn.Tanh(), nn.Linear(5, 2)], "takes 5 inputs.*gives 3"),
    (lambda nn: [nn.Linear(4, 3), nn.Tanh()], "ending with a Linear"),
    (lambda nn: [nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2), nn.Softmax(dim=0)], "dim 0"),
    (lambda nn: [nn.Linear(4, 3).half(), nn.Tanh(), nn.Linear(3, 2).half()], "float16"),
    (lambda nn: [nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2).double()], "float32, float64"),
])
def test_from_torch_refuses_what_it_cannot_represent(layers, match):
    with pytest.raises(InputError, match=match):
        fastff.MLP.from_torch(torch.nn.Sequential(*layers(torch.nn)))


def test_from_torch_refuses_other_modules_and_non_finite_weights():
    with pytest.raises(InputError, match="nn.Sequential.*got Linear"):
        fastff.MLP.from_torch(torch.nn.Linear(3, 2))
    module = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with torch.no_grad():
        module[0].weight[0, 0] = float("inf")
    with pytest.raises(InputError, match="NaN or inf"):
        fastff.MLP.from_torch(module)
