"""Denoising auto-encoder pre-training: the fused step against a direct computation, the run
record, the command line and bad arguments."""
import csv

import numpy as np
import pytest

import fastff
from fastff.errors import InputError
from fastff.training.pretrain import pretrain_dae
from conftest import assert_close, numeric_grad


def _direct_dae_step(x, W, b, act, lr, mask, target_map):
    """One SGD step of a tied-weight denoising auto-encoder, its gradient by central
    differences of the cost written out in NumPy (float64)."""
    f = fastff.activations.get(act).forward
    scale, shift = target_map
    t = x * scale + shift
    c = np.zeros(W.shape[0])

    def cost():
        a = f((x * mask) @ W + b) @ W.T + c
        return float((np.logaddexp(0, a) - t * a).sum() / len(x))

    gW, gb = numeric_grad(cost, W), numeric_grad(cost, b)
    return W - lr * gW, b - lr * gb


@pytest.mark.parametrize("kernels", ["reference", None])
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softsign"])
def test_one_dae_update_per_layer_matches_the_direct_computation(rng, act, kernels):
    sizes, lr, corruption, seed, batch = [7, 5, 4, 3], 0.3, 0.3, 11, 6
    net = fastff.MLP(sizes, activation=act, init="normalized", seed=3, dtype="float64",
                     kernels=kernels)
    x = rng.random((batch, sizes[0]))
    want = [(W.copy(), b.copy()) for W, b in net.params]
    masks = np.random.default_rng([seed, 0xDAE])
    inp = x
    for layer in range(net.n_hidden):
        W, b = want[layer]
        mask = masks.random(inp.shape) < 1 - corruption
        target_map = (1.0, 0.0) if layer == 0 or act == "sigmoid" else (0.5, 0.5)
        want[layer] = _direct_dae_step(inp, W, b, act, lr, mask, target_map)
        inp = fastff.activations.get(act).forward(inp @ want[layer][0] + want[layer][1])
    log = pretrain_dae(net, lambda k: (x, None), updates=1, lr=lr, corruption=corruption,
                       seed=seed)
    for (W, b), (W_want, b_want) in zip(net.params[:-1], want[:-1]):
        assert_close(W, W_want, np.float64, scale=1000)  # central differences: ~1e-10
        assert_close(b, b_want, np.float64, scale=1000)
    assert np.array_equal(net.params[-1][0], fastff.MLP(sizes, activation=act, seed=3,
                                                        dtype="float64").params[-1][0])
    assert [r["layer"] for r in log] == [1, 2]


def test_pretraining_lowers_the_reconstruction_cost_and_is_recorded(tmp_path):
    out = tmp_path / "run"
    options = dict(valid_size=300, test_size=300)
    run = fastff.train("24x2", activation="sigmoid", init="standard", lr=0.1, updates=60,
                       pretrain="dae", pretrain_updates=200, corruption=0.25, out_dir=out,
                       progress=False, data_options=options)
    first = {r["layer"]: r["reconstruction"] for r in reversed(run.pretrain)}
    last = {r["layer"]: r["reconstruction"] for r in run.pretrain}
    assert sorted(last) == [1, 2] and all(last[k] < first[k] for k in last)
    with open(out / "pretrain.csv", newline="") as f:
        assert [float(r["reconstruction"]) for r in csv.DictReader(f)] == [
            r["reconstruction"] for r in run.pretrain]
    assert run.config["pretrain"] == dict(pretrain="dae", pretrain_updates=200,
                                          corruption=0.25, pretrain_lr=0.1)
    # the same seed gives the same pre-trained net; resuming does not pre-train again
    again = fastff.train("24x2", activation="sigmoid", init="standard", lr=0.1, updates=60,
                         pretrain="dae", pretrain_updates=200, progress=False,
                         data_options=options)
    assert all(np.array_equal(a, b) for a, b in zip(run.model.state().values(),
                                                    again.model.state().values()))
    longer = fastff.train("24x2", activation="sigmoid", init="standard", lr=0.1, updates=80,
                          pretrain="dae", pretrain_updates=200, out_dir=out, resume=True,
                          progress=False, data_options=options)
    assert longer.pretrain == run.pretrain and longer.final["update"] == 80
    # without pre-training the same net starts from other weights
    plain = fastff.train("24x2", activation="sigmoid", init="standard", lr=0.1, updates=60,
                         progress=False, data_options=options)
    assert not np.array_equal(plain.model.params[0][0], run.model.params[0][0])
    with pytest.raises(InputError, match="pretrain"):
        fastff.train("24x2", activation="sigmoid", init="standard", lr=0.1, updates=80,
                     out_dir=out, resume=True, progress=False, data_options=options)
    # the report draws the pre-training; a run without one has no such panel
    pytest.importorskip("matplotlib")
    from fastff.report import report
    plain_dir = tmp_path / "plain"
    fastff.train("24x2", activation="sigmoid", init="standard", lr=0.1, updates=20,
                 progress=False, data_options=options, out_dir=plain_dir)
    index = report([out, plain_dir], tmp_path / "report")
    assert (tmp_path / "report" / "pretraining_reconstruction.png").stat().st_size > 10_000
    assert "pretraining_reconstruction.png" in index.read_text()
    report([plain_dir], tmp_path / "plain_report")
    assert not (tmp_path / "plain_report" / "pretraining_reconstruction.png").exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(pretrain="rbm"), "unknown pretrain"),
    (dict(pretrain="dae", corruption=1.0), "corruption"),
    (dict(pretrain="dae", corruption="0.2"), "corruption"),
    (dict(pretrain="dae", pretrain_updates=0), "pretrain_updates"),
    (dict(pretrain="dae", pretrain_lr=-1.0), "pretrain_lr"),
    (dict(pretrain_updates=10), "need pretrain"),
    (dict(pretrain="dae", activation="relu"), "bounded units"),
])
def test_bad_pretraining_arguments_are_refused(tmp_path, kwargs, match):
    args = dict(arch="8x2", updates=5, progress=False, out_dir=tmp_path / "r",
                data_options=dict(valid_size=50, test_size=50))
    with pytest.raises(InputError, match=match):
        fastff.train(**{**args, **kwargs})
    assert not (tmp_path / "r" / "checkpoint.npz").exists()


def test_inputs_outside_the_unit_range_are_refused():
    net = fastff.MLP([4, 3, 2], activation="tanh", dtype="float64")
    x = np.full((2, 4), 3.0)
    with pytest.raises(InputError, match="span"):
        pretrain_dae(net, lambda k: (x, None), updates=1, lr=0.1)
    # symmetric data whose first batch happens to be positive: the data's range decides
    batches = [np.full((2, 4), 0.5), np.full((2, 4), -0.5)]
    pretrain_dae(net, lambda k: (batches[k], None), updates=2, lr=0.1, input_range=(-1, 1))
    with pytest.raises(InputError, match=r"batch 1 spans \[-0.5, -0.5\], outside the \[0, 1\]"):
        pretrain_dae(net, lambda k: (batches[k], None), updates=2, lr=0.1)


def test_cli_pretrains(tmp_path, capsys):
    from fastff.cli import main
    rc = main(["train", "--arch", "16x2", "--updates", "30", "--pretrain", "dae",
               "--pretrain-updates", "20", "--corruption", "0.1", "--eval-size", "200",
               "--quiet", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 0 and "pre-trained (denoising auto-encoders)" in out and "pretrain.csv" in out
