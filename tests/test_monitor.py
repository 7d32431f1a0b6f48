"""The monitor's measurements: against direct computations, and the paper's claims."""
import warnings

import numpy as np
import pytest

import fastff
from fastff import activations, config
from fastff.errors import InputError
from fastff.kernels import reference as ref
from fastff.kernels.stats import ForwardStats
from conftest import numeric_grad
from fastff.monitor import per_example
from fastff.monitor import HISTOGRAMS, SCALARS, Stats, _backward, histogram, measure

ACTS = ["sigmoid", "tanh", "softsign", "relu"]


def random_set(rng, n, n_in, n_classes, dtype=np.float32):
    return rng.standard_normal((n, n_in)).astype(dtype), rng.integers(0, n_classes, n)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_statistics_equal_the_reference(rng, activation, dtype):
    net = fastff.MLP("13-37-29-5", activation=activation, init="normalized", dtype=dtype.__name__,
                     seed=3)
    x, y = random_set(rng, 41, 13, 5, dtype)
    m = measure(net, x, y, jacobian_examples=0)
    hs = net.hidden(x)
    for k, h in enumerate(hs[:-1]):
        st = ForwardStats(h.shape[1], activation)
        ref.accumulate_forward_stats(h, st)
        s = st.summary()
        n = h.size
        # counts exactly: the fractions are integer counts over the same denominator
        assert round(m.scalars["sat_low"][k] * n) == st.sat_low.sum() == round(s["sat_low"] * n)
        assert round(m.scalars["sat_high"][k] * n) == st.sat_high.sum()
        lo, hi = fastff.activations.get(activation).hist_range
        clipped = st.hist.copy()  # the kernel's counts, outside values taken out of the end bins
        clipped[0] -= (h < lo).sum()
        clipped[-1] -= (h > hi).sum()
        np.testing.assert_array_equal(m.hists["act"][k], clipped)
        assert m.outside["act"][k] * h.size == pytest.approx(((h < lo) | (h > hi)).sum())
        np.testing.assert_allclose(m.scalars["act_mean"][k], h.astype(np.float64).mean(), atol=1e-6)
        np.testing.assert_allclose(m.scalars["act_std"][k], h.astype(np.float64).std(), rtol=1e-4)
        np.testing.assert_allclose(m.scalars["act_p98"][k], np.percentile(np.abs(h), 98), rtol=1e-6)
    assert m.finite
    assert m.hists["act"].sum() + round((m.outside["act"] * [41 * 37, 41 * 29]).sum()) == 41 * (37 + 29)


def test_gradients_match_finite_differences(rng):
    """dC/ds per example and dC/dW of the mean cost, checked in float64."""
    net = fastff.MLP("7-11-6-3", activation="tanh", init="normalized", dtype="float64", seed=1)
    x, y = random_set(rng, 9, 7, 3, np.float64)

    def mean_cost():
        z = net.hidden(x)[-1]
        return float(np.mean([ref.softmax_nll(z[i:i + 1], y[i:i + 1])[0] for i in range(len(y))]))

    hs = net.hidden(x)
    _, _, grad = per_example(hs[-1], y, "nll", np)
    deltas, grad_ws = _backward(net, x, hs, grad, activations.get("tanh"), np)
    for k in range(2):
        np.testing.assert_allclose(numeric_grad(mean_cost, net.params[k][0]), grad_ws[k], atol=1e-8)
    # dC/ds of one example: the bias gradient of that example's own cost
    one = lambda: ref.softmax_nll(net.hidden(x[4:5])[-1], y[4:5])[0]  # noqa: E731
    np.testing.assert_allclose(numeric_grad(one, net.params[1][1]), deltas[1][4], atol=1e-8)


@pytest.mark.parametrize("activation", ACTS)
def test_jacobian_mean_singular_value_equals_direct_svd(rng, activation):
    # widths grow then shrink, so both Gram branches (n_out <= n_in and n_out > n_in) run
    net = fastff.MLP("17-23-19-4", activation=activation, init="normalized", dtype="float64", seed=2)
    x, y = random_set(rng, 6, 17, 4, np.float64)
    m = measure(net, x, y, jacobian_examples=3)
    hs = net.hidden(x)
    act = activations.get(activation)
    for k in range(2):
        W = net.params[k][0]
        direct = [np.linalg.svd(act.derivative(hs[k][i])[:, None] * W.T, compute_uv=False).mean()
                  for i in range(3)]
        # zero singular values (dead relu units) come out as sqrt(eps)-sized through the Gram
        np.testing.assert_allclose(m.scalars["jacobian_sv"][k], np.mean(direct), rtol=1e-9, atol=1e-7)


def test_histogram_keeps_outside_values_apart_and_skips_nan():
    v = np.array([-5.0, -1.0, -0.01, 0.0, 0.99, 1.0, 7.0, np.nan, np.inf])
    h, outside = histogram(v, -1.0, 1.0, 4, np)
    assert list(h) == [1, 1, 1, 2] and outside == 3  # -5, 7 and inf; NaN nowhere


def test_gradient_histograms_count_every_value(rng):
    net = fastff.MLP("10-12-8-3", seed=0)
    x, y = random_set(rng, 15, 10, 3)
    m = measure(net, x, y, jacobian_examples=1)
    for name, sizes in (("delta", [15 * 12, 15 * 8]), ("grad_w", [10 * 12, 12 * 8])):
        inside = m.hists[name].sum(axis=1)
        np.testing.assert_array_equal(inside + np.round(m.outside[name] * sizes), sizes)
    assert m.hists["delta"].shape[1] == config.GRAD_HIST_BINS == len(m.edges["delta"]) - 1
    assert m.edges["grad_w"][-1] == pytest.approx(config.GRAD_HIST_SIGMAS * m.scalars["grad_w_std"].max())


def test_diverged_model_reports_nan_clearly(rng):
    net = fastff.MLP("10-12-8-3", seed=0)
    net.params[1][0][0, 0] = np.nan
    x, y = random_set(rng, 15, 10, 3)
    with pytest.warns(RuntimeWarning, match="not finite"):
        m = measure(net, x, y)
    assert not m.finite and "NOT FINITE" in m.table()
    assert np.isnan(m.scalars["act_std"][1]) and np.isnan(m.scalars["jacobian_sv"][1])
    assert np.isfinite(m.scalars["act_std"][0])  # the layer below is still measured


def test_measure_rejects_bad_input(rng):
    net = fastff.MLP("10-12-3", seed=0)
    x, y = random_set(rng, 5, 10, 3)
    with pytest.raises(InputError, match="features"):
        measure(net, x[:, :9], y)
    with pytest.raises(InputError):
        measure(net, x, y + 3)
    with pytest.raises(InputError, match="jacobian_examples"):
        measure(net, x, y, jacobian_examples=-1)
    with pytest.raises(InputError, match="valid: act_mean"):
        Stats([measure(net, x, y)]).scalar("mean")


def test_stats_round_trip_and_tidy_rows(rng, tmp_path):
    net = fastff.MLP("10-12-8-3", seed=0)
    x, y = random_set(rng, 15, 10, 3)
    mon = fastff.Monitor(x, y, jacobian_examples=2)
    mon(net, update=0, examples=0)
    net.step(x[:5], y[:5], lr=0.1)
    mon(net, update=1, examples=5, jacobian=False)
    rd = fastff.record.RunDir(tmp_path)
    rd.save_stats(mon.stats)
    back = rd.load_stats()
    assert list(back.updates) == [0, 1] and len(back.until(0)) == 1
    for name in SCALARS:
        np.testing.assert_array_equal(back.scalar(name), mon.stats.scalar(name))
    for name in HISTOGRAMS:
        np.testing.assert_array_equal(back.hist(name), mon.stats.hist(name))
        np.testing.assert_array_equal(back.edges(name), mon.stats.edges(name))
    rows = list(back.rows())
    assert len(rows) == 2 * (2 + 2 * len(SCALARS))
    assert rows[2][2:5] == ("monitor", 1, "act_mean")
    np.savez(tmp_path / "stats.npz", updates=np.arange(2))
    with pytest.raises(InputError, match="missing"):
        rd.load_stats()


# -- the paper's claims (Figs. 6-8, Eq. 17), small but real --------------------------
@pytest.fixture(scope="module")
def init_measurements():
    """Both inits of the 5x1000 tanh net, measured at update 0 on 300 Shapeset test images."""
    data = fastff.data.load("shapeset", seed=0, valid_size=10, test_size=300)
    x, y = data.test
    return {init: measure(fastff.MLP("1024-1000x5-9", activation="tanh", init=init, seed=0), x, y)
            for init in ("standard", "normalized")}


def test_jacobian_singular_values_at_init(init_measurements):
    # section 6: about 0.5 with standard init, about 0.8 with normalized init
    std = init_measurements["standard"].scalars["jacobian_sv"]
    nrm = init_measurements["normalized"].scalars["jacobian_sv"]
    assert abs(std.mean() - 0.5) < 0.1 and abs(nrm.mean() - 0.8) < 0.1
    assert (nrm > std + 0.15).all()


def test_backpropagated_gradients_vanish_only_under_standard_init(init_measurements):
    # Fig. 7: dC/ds shrinks from the top to the bottom layer under standard init
    std = init_measurements["standard"].scalars["delta_std"]
    assert std[-1] / std[0] > 3 and (np.diff(std) > 0).all()
    nrm = init_measurements["normalized"].scalars["delta_std"]
    ratios = nrm[1:] / nrm[:-1]
    assert ((ratios < 1.5) & (ratios > 1 / 1.5)).all()


def test_weight_gradients_are_level_even_under_standard_init(init_measurements):
    # Fig. 8 and Eq. 14: Var[dC/dW] about the same in every layer
    for m in init_measurements.values():
        g = m.scalars["grad_w_std"]
        assert g.max() / g.min() < 1.5


def test_activations_shrink_upward_under_standard_init(init_measurements):
    # Fig. 6: the peak at 0 grows in higher layers under standard init
    std = init_measurements["standard"].scalars["act_std"]
    assert (np.diff(std) < 0).all() and std[0] / std[-1] > 4
    nrm = init_measurements["normalized"].scalars["act_std"]
    assert nrm[0] / nrm[-1] < 2
    centre = config.HIST_BINS // 2
    peak = init_measurements["standard"].hists["act"][:, centre - 1:centre + 1].sum(axis=1)
    assert (np.diff(peak) > 0).all()


def test_sigmoid_top_layer_saturates_early():
    # Fig. 2: sigmoid 4x1000, standard init: the top hidden layer's mean falls toward 0 within
    # the first updates while the lower layers stay above 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = fastff.train("1000x4", activation="sigmoid", init="standard", lr=0.1, updates=1000,
                           eval_every=1000, monitor_every=250, progress=False,
                           data_options=dict(valid_size=100, test_size=300))
    means = run.stats.scalar("act_mean")
    assert abs(means[0, -1] - 0.5) < 0.05  # it starts at the sigmoid's centre
    assert means[-1, -1] < 0.2
    assert (means[-1, :-1] > 0.45).all()
