"""The reference's gradients against finite differences (float64) and PyTorch autograd."""
import numpy as np
import pytest

from fastff.kernels import reference as ref

from conftest import numeric_grad

ACTS = ["sigmoid", "tanh", "softsign", "relu", "linear"]


def two_layer_loss(x, y, W1, b1, W2, b2, act, cost="softmax_nll"):
    h = ref.dense_forward(x, W1, b1, act)
    z = ref.dense_forward(h, W2, b2, "linear")
    return getattr(ref, cost)(z, y)[0]


def analytic_grads(x, y, W1, b1, W2, b2, act, lr=1.0, cost="softmax_nll"):
    """Gradients recovered from the SGD update: g = (old - new) / lr."""
    P = [a.copy() for a in (W1, b1, W2, b2)]
    h = ref.dense_forward(x, P[0], P[1], act)
    z = ref.dense_forward(h, P[2], P[3], "linear")
    _, gz = getattr(ref, cost)(z, y)
    gh = ref.dense_backward_sgd(h, z, P[2], P[3], gz, "linear", lr)
    gx = ref.dense_backward_sgd(x, h, P[0], P[1], gh, act, lr)
    return [(o - n) / lr for o, n in zip((W1, b1, W2, b2), P)], gx


@pytest.mark.parametrize("act", ACTS)
def test_reference_gradients_match_finite_differences(act):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 7))
    y = rng.integers(0, 3, 5)
    params = [rng.standard_normal((7, 6)) * 0.7, rng.standard_normal(6) * 0.3,
              rng.standard_normal((6, 3)) * 0.7, rng.standard_normal(3) * 0.3]
    grads, gx = analytic_grads(x, y, *params, act)
    loss = lambda: two_layer_loss(x, y, *params, act)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(g, numeric_grad(loss, p), rtol=1e-5, atol=1e-8)
    num_x = numeric_grad(loss, x)
    np.testing.assert_allclose(gx, num_x, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("act", ACTS)
def test_reference_gradients_match_pytorch(act):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((10, 13))
    y = rng.integers(0, 4, 10)
    params = [rng.standard_normal((13, 8)) * 0.5, rng.standard_normal(8) * 0.2,
              rng.standard_normal((8, 4)) * 0.5, rng.standard_normal(4) * 0.2]
    grads, _ = analytic_grads(x, y, *params, act)
    tp = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    f = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "softsign": torch.nn.functional.softsign,
         "relu": torch.relu, "linear": lambda s: s}[act]
    z = f(torch.tensor(x) @ tp[0] + tp[1]) @ tp[2] + tp[3]
    loss = torch.nn.functional.cross_entropy(z, torch.tensor(y))
    loss.backward()
    assert two_layer_loss(x, y, *params, act) == pytest.approx(loss.item(), rel=1e-12)
    for g, t in zip(grads, tp):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_quadratic_cost_gradients_match_finite_differences_and_pytorch():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 5))
    y = rng.integers(0, 4, 6)
    params = [rng.standard_normal((5, 7)) * 0.8, rng.standard_normal(7) * 0.3,
              rng.standard_normal((7, 4)) * 0.8, rng.standard_normal(4) * 0.3]
    grads, gx = analytic_grads(x, y, *params, "tanh", cost="softmax_quadratic")
    loss = lambda: two_layer_loss(x, y, *params, "tanh", cost="softmax_quadratic")  # noqa: E731
    for p, g in zip(params + [x], grads + [gx]):
        np.testing.assert_allclose(g, numeric_grad(loss, p), rtol=1e-5, atol=1e-9)
    torch = pytest.importorskip("torch")
    tp = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    z = torch.tanh(torch.tensor(x) @ tp[0] + tp[1]) @ tp[2] + tp[3]
    target = torch.nn.functional.one_hot(torch.tensor(y), 4).double()
    t_loss = 0.5 * ((torch.softmax(z, dim=1) - target) ** 2).sum(dim=1).mean()
    t_loss.backward()
    assert loss() == pytest.approx(t_loss.item(), rel=1e-12)
    for g, t in zip(grads, tp):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-12)
