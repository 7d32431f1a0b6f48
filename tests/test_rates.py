"""Per-parameter learning rates (fastff.kernels.rates): one step against a direct computation,
the CPU kernels against the reference, the running averages, resume, the command line and bad
arguments."""
import numpy as np
import pytest

import fastff
from fastff import config
from fastff.errors import InputError
from fastff.kernels import BackwardStats, LayerRates, cpu, reference as ref
from fastff.kernels.rates import output_curvature
from conftest import assert_close, numeric_grad

METHODS = ["diag_hessian", "grad_variance"]


def _logits(net, x):
    return net.hidden(x)[-1]


def _direct_first_step(net, x, y, lr, method):
    """What one step with fresh rates must do, computed without the kernels (float64): the
    gradient by central differences of the mean cost; for ``diag_hessian``, the Gauss-Newton
    diagonal with the output curvature's diagonal, sum_k (dz_k/dw)^2 curv_k, from
    central-difference Jacobians of the logits (on a one-hidden-layer net every weight has one
    path to each logit, so LeCun's back-propagated diagonal must equal it); for
    ``grad_variance``, the unbiased variance of the per-example gradients."""
    z = _logits(net, x)
    curv = output_curvature(z, net.loss)  # carries 1/B
    rows = np.arange(len(x))
    damping = config.SECOND_ORDER_DAMPING[method]
    out = []
    for W, b in net.params:
        new = []
        for p in (W, b):
            def mean_cost(rows=rows):
                zz = _logits(net, x[rows])
                zz = zz - zz.max(axis=1, keepdims=True)
                logp = zz - np.log(np.exp(zz).sum(axis=1, keepdims=True))
                return float(-logp[np.arange(len(rows)), y[rows]].mean())
            g = numeric_grad(mean_cost, p)
            if method == "diag_hessian":
                est = np.zeros_like(p)
                for idx in np.ndindex(p.shape):
                    old = p[idx]
                    p[idx] = old + 1e-6
                    up = _logits(net, x)
                    p[idx] = old - 1e-6
                    down = _logits(net, x)
                    p[idx] = old
                    jac = (up - down) / 2e-6
                    est[idx] = (jac * jac * curv).sum()
                rate = lr / (1 + est / damping)
            else:
                per = np.stack([numeric_grad(lambda r=r: mean_cost(np.array([r])), p)
                                for r in rows])
                rate = lr / (1 + np.sqrt(per.var(axis=0, ddof=1)) / damping)
            new.append(p - rate * g)
        out.append(new)
    return out


@pytest.mark.parametrize("kernels", ["reference", None])
@pytest.mark.parametrize("method", METHODS)
def test_one_step_matches_the_direct_computation(rng, method, kernels):
    sizes = [5, 4, 3]
    net = fastff.MLP(sizes, activation="tanh", init="normalized", seed=2, dtype="float64",
                     kernels=kernels)
    x = rng.standard_normal((6, 5))
    y = rng.integers(0, 3, 6)
    want = _direct_first_step(net, x, y, 0.3, method)
    net.step(x, y, 0.3, rates=net.new_rates(method))
    for (W, b), (W_want, b_want) in zip(net.params, want):
        assert_close(W, W_want, np.float64, scale=1000)  # central differences: ~1e-10
        assert_close(b, b_want, np.float64, scale=1000)


def _layer(rng, batch, n_in, n_out, dtype, act):
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    b = (rng.standard_normal(n_out) * 0.5).astype(dtype)
    h = ref.dense_forward(x, W, b, act)
    g = (rng.standard_normal(h.shape) / batch).astype(dtype)
    c = (rng.random(h.shape) / batch).astype(dtype)
    return x, W, b, h, g, c


@pytest.mark.parametrize("shape", [(2, 7, 5), (10, 13, 29), (16, 31, 17), (37, 19, 23)])
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "softsign", "relu", "linear"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_kernel_matches_the_reference(rng, dtype, method, act, shape):
    """Three steps (the running averages and their bias correction), small-batch tiles and
    the BLAS path (37 rows), with statistics."""
    x, W, b, h, g, c = _layer(rng, *shape, dtype, act)
    c = c if method == "diag_hessian" else None
    runs = []
    for kernel in (ref.dense_backward_second_order, cpu.dense_backward_second_order):
        Wk, bk = W.copy(), b.copy()
        rates, stats = LayerRates(*W.shape, method, dtype), BackwardStats(shape[2])
        for _ in range(3):
            out = kernel(x, h, Wk, bk, g, act, 0.05, rates, curv_h=c, stats=stats)
        runs.append((*out, Wk, bk, rates.W, rates.b, stats.delta_total, stats.grad_w_total_sq))
        assert rates.steps == 3
    for mine, theirs in zip(runs[1], runs[0]):
        assert (mine is None) == (theirs is None)
        if theirs is not None:
            assert_close(mine, theirs, dtype, scale=max(np.abs(theirs).max(), 1e-30))


def test_the_first_layer_returns_nothing_and_updates_the_same(rng):
    x, W, b, h, g, c = _layer(rng, 10, 13, 9, np.float64, "tanh")
    Wa, Wb = W.copy(), W.copy()
    ra, rb = LayerRates(13, 9, "diag_hessian", np.float64), LayerRates(13, 9, "diag_hessian", np.float64)
    assert cpu.dense_backward_second_order(x, h, Wa, b.copy(), g, "tanh", 0.1, ra, curv_h=c,
                                           compute_grad_x=False) == (None, None)
    gx, cx = cpu.dense_backward_second_order(x, h, Wb, b.copy(), g, "tanh", 0.1, rb, curv_h=c)
    np.testing.assert_array_equal(Wa, Wb)
    assert gx.shape == cx.shape == x.shape
    assert (cx >= 0).all()  # a Gauss-Newton diagonal


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", [3, 10, 16])
def test_one_and_two_threads_give_the_same_bits(rng, method, batch):
    """The small-batch kernels (larger batches' sums follow the BLAS library's threads)."""
    import numba
    x, W, b, h, g, c = _layer(rng, batch, 300, 260, np.float32, "tanh")
    outs = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        try:
            Wk, bk = W.copy(), b.copy()
            rates = LayerRates(300, 260, method, np.float32)
            gx, cx = cpu.dense_backward_second_order(
                x, h, Wk, bk, g, "tanh", 0.1, rates,
                curv_h=c if method == "diag_hessian" else None)
            outs.append((Wk, bk, gx, rates.W))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b_ in zip(*outs):
        np.testing.assert_array_equal(a, b_)


def test_running_average_and_bias_correction(rng):
    """After t steps of the same batch, the average of a constant estimate is the estimate
    itself once corrected (the correction undoes the pull toward the zero start)."""
    x, W, b, h, g, c = _layer(rng, 8, 6, 4, np.float64, "linear")
    rates = LayerRates(6, 4, "diag_hessian", np.float64, decay=0.9)
    for t in range(1, 4):
        ref.dense_backward_second_order(x, h, W.copy(), b.copy(), g, "linear", 0.1, rates,
                                        curv_h=c)
        assert rates.steps == t
        np.testing.assert_allclose(rates.W / (1 - 0.9 ** t), (x * x).T @ c, rtol=1e-12)
        np.testing.assert_allclose(rates.b / (1 - 0.9 ** t), c.sum(axis=0), rtol=1e-12)


def test_output_curvature_is_the_gauss_newton_diagonal(rng):
    z = rng.standard_normal((4, 5))
    for loss in ("nll", "quadratic"):
        want = np.zeros_like(z)
        for r in range(4):
            p = np.exp(z[r] - z[r].max())
            p /= p.sum()
            jac = np.diag(p) - np.outer(p, p)  # dp/dz
            hess = jac if loss == "nll" else jac.T @ jac  # Gauss-Newton of the cost in z
            want[r] = np.diag(hess) / 4
        np.testing.assert_allclose(output_curvature(z, loss), want, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_training_resumes_bit_identically(tmp_path, method):
    from test_model_train import tiny_data
    opts = dict(dataset=tiny_data(), lr=0.1, eval_every=10, monitor_every=0, progress=False,
                optimizer=method, damping=1e-3)
    whole = fastff.train("9x2", updates=40, **opts)
    fastff.train("9x2", updates=20, out_dir=tmp_path, **opts)
    resumed = fastff.train("9x2", updates=40, out_dir=tmp_path, resume=True, **opts)
    for (W1, b1), (W2, b2) in zip(whole.model.params, resumed.model.params):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    state, _, _ = fastff.record.RunDir(tmp_path).load_checkpoint()
    assert state["rates_steps"].tolist() == [40, 40, 40]
    assert resumed.config["optimizer"] == method
    assert resumed.config["rate_options"] == {"damping": 1e-3, "decay": config.SECOND_ORDER_DECAY}
    with pytest.raises(InputError, match="optimizer"):
        fastff.train("9x2", updates=50, out_dir=tmp_path, resume=True,
                     **{**opts, "optimizer": "sgd", "damping": None})


def test_second_order_rates_train_a_small_net():
    """The damping is in the estimate's units: the defaults suit the paper's 1000-unit nets,
    whose estimates are far smaller than this small net's."""
    from test_model_train import tiny_data
    for method in METHODS:
        run = fastff.train("16x2", dataset=tiny_data(), lr=0.3, updates=300, monitor_every=0,
                           progress=False, optimizer=method, damping=1e-2)
        assert run.history[-1]["train_loss"] < 0.1 * run.history[1]["train_loss"]


@pytest.mark.parametrize("method", METHODS)
def test_a_damping_far_above_every_estimate_gives_sgds_step(rng, method):
    net = fastff.MLP("6-5x2-3", seed=1, dtype="float64")
    twin = net.copy()
    x, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    rates = net.new_rates(method, damping=1e12)
    for _ in range(3):
        assert net.step(x, y, 0.1, rates=rates) == pytest.approx(twin.step(x, y, 0.1), rel=1e-9)
    for (W1, b1), (W2, b2) in zip(net.params, twin.params):
        np.testing.assert_allclose(W1, W2, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b1, b2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="adam"), "unknown optimizer 'adam'"),
    (dict(optimizer="diag_hessian", damping=0), "damping must be a positive"),
    (dict(optimizer="diag_hessian", damping=float("nan")), "damping must be a positive"),
    (dict(optimizer="grad_variance", estimate_decay=1.0), r"decay must be in \[0, 1\)"),
    (dict(optimizer="grad_variance", estimate_decay="0.9"), "decay must be a number"),
    (dict(optimizer="grad_variance", batch_size=1), "batch_size >= 2"),
    (dict(damping=1e-3), "damping and estimate_decay are for"),
])
def test_bad_optimizer_arguments_are_refused(kwargs, match):
    from test_model_train import tiny_data
    with pytest.raises(InputError, match=match):
        fastff.train("9x2", dataset=tiny_data(), updates=5, progress=False, **kwargs)


def test_kernel_arguments_are_checked(rng):
    x, W, b, h, g, c = _layer(rng, 10, 13, 9, np.float64, "tanh")
    rates = LayerRates(13, 9, "diag_hessian", np.float64)
    call = cpu.dense_backward_second_order
    with pytest.raises(InputError, match="needs curv_h"):
        call(x, h, W, b, g, "tanh", 0.1, rates)
    with pytest.raises(InputError, match="curv_h must have"):
        call(x, h, W, b, g, "tanh", 0.1, rates, curv_h=c[:, :3])
    with pytest.raises(InputError, match="rates must be"):
        call(x, h, W, b, g, "tanh", 0.1, "fast", curv_h=c)
    with pytest.raises(InputError, match="LayerRates.W must be"):
        call(x, h, W, b, g, "tanh", 0.1, LayerRates(12, 9, "diag_hessian", np.float64), curv_h=c)
    with pytest.raises(InputError, match="LayerRates.W must be"):
        call(x, h, W, b, g, "tanh", 0.1, LayerRates(13, 9, "diag_hessian", np.float32), curv_h=c)
    variance = LayerRates(13, 9, "grad_variance", np.float64)
    with pytest.raises(InputError, match="grad_variance takes none"):
        call(x, h, W, b, g, "tanh", 0.1, variance, curv_h=c)
    with pytest.raises(InputError, match="at least 2"):
        call(x[:1], h[:1], W, b, g[:1], "tanh", 0.1, variance)
    with pytest.raises(InputError, match="curv_x is written only"):
        call(x, h, W, b, g, "tanh", 0.1, variance, curv_x=np.empty_like(x))
    with pytest.raises(InputError, match="shares memory"):
        call(x, h, W, b, g, "tanh", 0.1, rates, curv_h=c, curv_x=x)
    bad = LayerRates(13, 9, "diag_hessian", np.float64)
    bad.steps = -1
    with pytest.raises(InputError, match="steps"):
        call(x, h, W, b, g, "tanh", 0.1, bad, curv_h=c)
    with pytest.raises(InputError, match="contains NaN"):
        call(x, h, W, b, g, "tanh", 0.1, rates, curv_h=np.full_like(c, np.nan))
    net = fastff.MLP("13-9-3", seed=0, dtype="float64")
    other = fastff.MLP("13-8-3", seed=0, dtype="float64")
    with pytest.raises(InputError, match="made for a 13-8-3"):
        net.step(x, np.arange(10) % 3, 0.1, rates=other.new_rates("diag_hessian"))


def test_cli_trains_with_per_parameter_rates(tmp_path, capsys):
    from fastff.cli import main
    main(["train", "--arch", "8x2", "--updates", "20", "--eval-size", "200", "--quiet",
          "--optimizer", "diag_hessian", "--damping", "1e-4", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "optimizer='diag_hessian'" in out or "diag_hessian" in out
    cfg = fastff.record.RunDir(tmp_path / "run").read_config()
    assert cfg["optimizer"] == "diag_hessian" and cfg["rate_options"]["damping"] == 1e-4


def test_estimates_that_overflow_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path,
                                                                                monkeypatch):
    from fastff.model import Rates
    from test_model_train import tiny_data
    real = Rates.finite
    calls = []

    def finite_until_the_second_log(self, xp=np):
        calls.append(1)
        return real(self, xp) and len(calls) < 3  # logs at updates 0, 10, then 20 "overflows"
    monkeypatch.setattr(Rates, "finite", finite_until_the_second_log)
    with pytest.raises(fastff.DivergenceError, match=r"estimates became inf or NaN .* update 20 "
                                                     r".*checkpoint"):
        fastff.train("9x2", dataset=tiny_data(), lr=0.1, updates=40, eval_every=10,
                     monitor_every=0, progress=False, optimizer="grad_variance", out_dir=tmp_path)
    state, update, _ = fastff.record.RunDir(tmp_path).load_checkpoint()
    assert update == 10 and state["rates_steps"].tolist() == [10, 10, 10]
