"""The MLP, the trainer, the run record and the command line."""
import csv
import json

import numpy as np
import pytest

import fastff
from fastff import cli
from fastff.errors import DeviceError, DivergenceError, InputError
from fastff.data import ArrayDataset


def tiny_data(seed=0, n=400, n_in=12, classes=3):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, n_in)) * 2
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.standard_normal((n, n_in))).astype(np.float32)
    split = lambda a, b: (x[a:b], y[a:b])
    return ArrayDataset("blobs", split(0, 200), split(200, 300), split(300, 400), classes, seed)


@pytest.mark.parametrize("loss", ["nll", "quadratic"])
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softsign", "relu"])
def test_cpu_step_matches_reference_step(act, loss):
    rng = np.random.default_rng(3)
    a = fastff.MLP("23-31x3-5", activation=act, seed=1, loss=loss)
    b = fastff.MLP("23-31x3-5", activation=act, seed=1, kernels="reference", loss=loss)
    for _ in range(5):
        x = rng.standard_normal((10, 23)).astype(np.float32)
        y = rng.integers(0, 5, 10)
        assert a.step(x, y, 0.1) == pytest.approx(b.step(x, y, 0.1), rel=1e-5)
    for (W1, b1), (W2, b2) in zip(a.params, b.params):
        np.testing.assert_allclose(W1, W2, atol=2e-5, rtol=2e-4)


def test_mlp_api():
    net = fastff.MLP([12, 20, 20, 3], activation="tanh", init="standard", seed=0)
    x = np.random.default_rng(0).standard_normal((7, 12)).astype(np.float32)
    p = net.forward(x)
    assert p.shape == (7, 3) and np.allclose(p.sum(1), 1, atol=1e-6)
    assert net.predict(x).shape == (7,)
    assert 0.0 <= net.error(x, np.zeros(7, np.int64)) <= 1.0
    assert len(net.params) == 3 and net.params[0][0].shape == (12, 20)
    assert all(not b.any() for _, b in net.params)  # biases start at zero
    assert "12-20-20-3" in repr(net)


def test_mlp_rejects_bad_input():
    net = fastff.MLP("4-5-2")
    x = np.ones((3, 4), np.float32)
    with pytest.raises(InputError, match="expects 4"):
        net.step(np.ones((3, 5), np.float32), np.zeros(3, np.int64), 0.1)
    with pytest.raises(InputError, match="lr"):
        net.step(x, np.zeros(3, np.int64), -1)
    with pytest.raises(InputError, match=r"\[0, 2\)"):
        net.step(x, np.array([0, 1, 2]), 0.1)
    with pytest.raises(InputError, match="NaN"):
        net.step(np.full((3, 4), np.nan, np.float32), np.zeros(3, np.int64), 0.1)
    with pytest.raises(InputError, match="valid: relu, sigmoid, softsign, tanh"):
        fastff.MLP("4-5-2", activation="gelu")
    with pytest.raises(InputError, match="valid: cpu, cuda"):
        fastff.MLP("4-5-2", device="tpu")
    with pytest.raises(InputError, match="float32"):
        fastff.MLP("4-5-2", dtype="float16")


def test_cuda_without_gpu_says_what_is_missing():
    try:
        import cupy  # noqa: F401
        cupy.cuda.runtime.getDeviceCount()
        pytest.skip("a CUDA device is present")
    except Exception:
        pass
    with pytest.raises(DeviceError, match="CuPy|GPU"):
        fastff.MLP("4-5-2", device="cuda")


def test_train_records_run_and_is_deterministic(tmp_path):
    runs = [fastff.train("16x2", dataset=tiny_data(), lr=0.1, updates=60, eval_every=20,
                         out_dir=tmp_path / f"r{i}", progress=False) for i in range(2)]
    assert [h["update"] for h in runs[0].history] == [0, 20, 40, 60]
    assert runs[0].history[-1]["valid_error"] < 0.5  # it learns the blobs
    for (Wa, _), (Wb, _) in zip(runs[0].model.params, runs[1].model.params):
        np.testing.assert_array_equal(Wa, Wb)
    d = runs[0].dir
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["arch"] == [12, 16, 16, 3] and cfg["seed"] == 0 and "numba" in cfg["versions"]
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    assert tuple(rows[0]) == fastff.record.COLUMNS
    keys = {(r["source"], r["layer"], r["statistic"]) for r in rows}
    assert {("train", "1", "sat_low"), ("train", "2", "std"), ("eval", "0", "valid_error"),
            ("monitor", "2", "jacobian_sv"), ("monitor", "1", "act_p98")} <= keys
    valid = [r for r in rows if r["statistic"] == "valid_error"]
    assert [int(r["update"]) for r in valid] == [0, 20, 40, 60]
    # default cadence: a snapshot every updates/10 = 6 updates, update 0 included
    assert list(runs[0].stats.updates) == list(range(0, 61, 6))
    saved = fastff.record.RunDir(d).load_stats()
    np.testing.assert_array_equal(saved.scalar("act_std"), runs[0].stats.scalar("act_std"))
    np.testing.assert_array_equal(saved.hist("delta"), runs[1].stats.hist("delta"))
    assert not list(d.glob("*.tmp"))  # atomic writes leave nothing behind


def test_resume_gives_the_uninterrupted_result(tmp_path):
    opts = dict(dataset=tiny_data(), lr=0.1, eval_every=20, monitor_every=10, progress=False)
    full = fastff.train("16x2", updates=60, **opts)
    fastff.train("16x2", updates=40, out_dir=tmp_path, **opts)
    resumed = fastff.train("16x2", updates=60, out_dir=tmp_path, resume=True, **opts)
    for (Wa, ba), (Wb, bb) in zip(full.model.params, resumed.model.params):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)
    assert [h["update"] for h in resumed.history] == [0, 20, 40, 60]
    assert list(resumed.stats.updates) == [0, 10, 20, 30, 40, 50, 60]
    np.testing.assert_array_equal(full.stats.scalar("delta_std"), resumed.stats.scalar("delta_std"))
    with pytest.raises(InputError, match="lr"):
        fastff.train("16x2", dataset=tiny_data(), lr=0.2, updates=60, eval_every=20,
                     out_dir=tmp_path, progress=False, resume=True)


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(DivergenceError, match=r"at update \d+.*checkpoint"):
        fastff.train("64x3", dataset=tiny_data(), activation="relu", init="normal", lr=1e4,
                     updates=200, eval_every=1, out_dir=tmp_path, progress=False)
    state, update, history = fastff.record.RunDir(tmp_path).load_checkpoint()
    assert all(np.isfinite(v).all() for k, v in state.items() if k != "sizes")
    assert history[-1]["update"] == update


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=0), "lr"), (dict(updates=0), "updates"), (dict(dataset="imagenet"), "valid: cifar10, mnist, shapeset, small_imagenet"),
    (dict(init="xavierr"), "valid:"), (dict(resume=True), "out_dir"),
])
def test_train_rejects_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        fastff.train("8", **{"dataset": "shapeset", "progress": False, "updates": 1, **kwargs})


def test_cli_train_on_shapeset(tmp_path, capsys):
    rc = cli.main(["train", "--arch", "32x2", "--updates", "30", "--eval-size", "200",
                   "--quiet", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert rc == 0 and "test error" in out and "saturated units" in out
    assert (tmp_path / "run" / "metrics.csv").is_file()


def test_cli_reports_errors_cleanly(capsys):
    assert cli.main(["train", "--updates", "0", "--quiet"]) == 2
    assert "updates must be a positive integer" in capsys.readouterr().err


def test_cli_data_show(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "grid.png"
    assert cli.main(["data", "show", "shapeset", "--out", str(out), "--rows", "2", "--cols", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reference_kernels_run_on_the_cpu_only(monkeypatch):
    # where a GPU is usable, device="cuda" with kernels="reference" is refused, not run on host
    monkeypatch.setattr("fastff.device.cuda_status", lambda: (True, ""))
    with pytest.raises(InputError, match="run on the cpu, not on device='cuda'"):
        fastff.MLP("4-5-2", device="cuda", kernels="reference")


def test_backends_are_objects_in_one_registry():
    from fastff import kernels
    assert kernels.backends() == ["cpu", "cuda", "reference"]
    cpu_backend = kernels.get_backend("cpu")
    assert cpu_backend.xp is np and cpu_backend.device == "cpu" and not cpu_backend.loss_on_device
    assert kernels.get_backend("cuda").loss_on_device
    small = fastff.MLP("4-5-2").plan
    big = cpu_backend.plan([1024] + [3000] * 3 + [9], "float32")
    # the CPU's own tunables: prefetch, and the parallel passes or their serial twins
    assert small.hints == dict(prefetch=False, parallel=True)
    assert big.hints == dict(prefetch=True, parallel=True)
    assert kernels.get_backend("reference").plan([4, 5, 2], "float32").hints == {}
    with pytest.raises(InputError, match="valid: cpu, cuda, reference"):
        kernels.get_backend("tpu")


def test_the_quadratic_cost_trains_records_and_measures(tmp_path, capsys):
    from fastff.kernels import reference as ref
    opts = dict(dataset=tiny_data(), lr=0.5, updates=60, eval_every=20, monitor_every=30,
                progress=False)
    run = fastff.train("16x2", loss="quadratic", out_dir=tmp_path / "q", **opts)
    nll = fastff.train("16x2", **opts)
    assert run.model.loss == "quadratic" and "loss='quadratic'" in repr(run.model)
    assert json.loads((tmp_path / "q" / "config.json").read_text())["loss"] == "quadratic"
    # the step's cost is the quadratic one: at most 1 per example, and not the nll run's numbers
    assert 0 < run.history[-1]["train_loss"] < 1 and run.history[-1]["train_loss"] != nll.history[-1]["train_loss"]
    # the monitor measures the run's own cost and its gradients
    x, y = tiny_data().test
    m = fastff.measure(run.model, x, y)
    z = run.model.logits(x).astype(np.float64)
    assert m.loss == pytest.approx(ref.softmax_quadratic(z, y)[0], rel=1e-6)
    assert m.loss != pytest.approx(ref.softmax_nll(z, y)[0], rel=1e-3)
    with pytest.raises(InputError, match="loss"):
        fastff.train("16x2", out_dir=tmp_path / "q", resume=True, **opts)  # it was quadratic
    with pytest.raises(InputError, match="unknown loss 'mse'"):
        fastff.MLP("4-3-2", loss="mse")
    assert cli.main(["train", "--arch", "8", "--loss", "quadratic", "--updates", "20",
                     "--eval-size", "40", "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert json.loads((tmp_path / "c" / "config.json").read_text())["loss"] == "quadratic"


def test_train_on_a_finite_shapeset_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "fin"
    assert cli.main(["train", "--arch", "8", "--finite", "40", "--updates", "12", "--eval-size",
                     "20", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["data_options"]["finite"] == 40
    assert cli.main(["train", "--dataset", "mnist", "--finite", "40", "--updates", "1"]) == 2
    assert "--finite is a Shapeset option" in capsys.readouterr().err


def test_the_record_names_the_shapeset_stream_and_a_resume_keeps_it(tmp_path, capsys):
    # the default stream is the counter one, and the record says so
    assert cli.main(["train", "--arch", "8", "--updates", "2", "--eval-size", "20", "--out",
                     str(tmp_path / "counter"), "--quiet"]) == 0
    cfg = json.loads((tmp_path / "counter" / "config.json").read_text())
    assert cfg["shapeset_generator"] == "counter" and "generator" not in cfg["data_options"]
    # the older stream on request; a resume that does not name it keeps it
    out = tmp_path / "seq"
    args = ["train", "--arch", "8", "--shapeset-generator", "sequential", "--eval-size", "20",
            "--out", str(out), "--quiet", "--eval-every", "6"]
    assert cli.main([*args, "--updates", "6"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["shapeset_generator"] == "sequential"
    opts = dict(updates=12, eval_every=6, progress=False, lr=0.01,
                data_options=dict(valid_size=20, test_size=20))
    whole = fastff.train("8", **{**opts, "data_options": dict(opts["data_options"],
                                                               generator="sequential")})
    other = fastff.train("8", **opts)  # the default stream: other images, other weights
    assert not np.array_equal(other.model.params[0][0], whole.model.params[0][0])
    for record_from_before in (False, True):
        if record_from_before:  # a record written before the stream was named: sequential
            assert cli.main([*args, "--updates", "6", "--overwrite"]) == 0
            cfg = json.loads((out / "config.json").read_text())
            del cfg["shapeset_generator"], cfg["data_options"]["generator"]
            (out / "config.json").write_text(json.dumps(cfg))
        resumed = fastff.train("8", out_dir=out, resume=True, **opts)
        for (W1, _), (W2, _) in zip(whole.model.params, resumed.model.params):
            np.testing.assert_array_equal(W1, W2)
    # asking a resumed run for the other stream is refused, the stream named
    with pytest.raises(InputError, match="Shapeset stream 'sequential'"):
        fastff.train("8", out_dir=out, resume=True, **{
            **opts, "updates": 18, "data_options": dict(opts["data_options"], generator="counter")})
    assert cli.main(["train", "--dataset", "mnist", "--shapeset-generator", "counter"]) == 2
    assert "Shapeset option" in capsys.readouterr().err


def test_public_functions_do_not_shadow_modules():
    import importlib.util
    for name in ("train", "sweep", "reproduce"):
        assert callable(getattr(fastff, name))
        assert importlib.util.find_spec(f"fastff.{name}") is None, name
    assert fastff.training.train is fastff.train
    assert fastff.sweeps.sweep is fastff.sweep and fastff.reproduction.reproduce is fastff.reproduce


def test_the_record_keeps_the_final_test_outcomes(tmp_path):
    from fastff.record import RunDir
    data = tiny_data()
    run = fastff.train("7x2", dataset=data, lr=0.1, updates=30, eval_every=10, out_dir=tmp_path,
                       progress=False, monitor_every=0)
    update, correct = RunDir(tmp_path).load_test_outcomes()
    assert update == 30 and correct.dtype == bool and correct.shape == (len(data.test[1]),)
    np.testing.assert_array_equal(correct, run.model.predict(data.test[0]) == data.test[1])
    assert float((~correct).mean()) == run.final["test_error"]
    (tmp_path / "test_outcomes.npz").write_bytes(b"not a zip")
    with pytest.raises(fastff.RecordError, match="test_outcomes.npz cannot be read"):
        RunDir(tmp_path).load_test_outcomes()


def test_data_seed_fixes_the_data_apart_from_the_weights(tmp_path):
    from fastff.record import RunDir
    opts = dict(data_options=dict(valid_size=60, test_size=80), updates=20, eval_every=10,
                monitor_every=0, progress=False, lr=0.05)
    sets = {s: fastff.data.load("shapeset", seed=s, valid_size=60, test_size=80) for s in (3, 5)}
    assert not np.array_equal(sets[3].test[0], sets[5].test[0])
    runs = {}
    for seed, data_seed in ((3, 5), (4, 5), (3, None)):
        out = tmp_path / f"{seed}-{data_seed}"
        runs[(seed, data_seed)] = fastff.train("9x2", seed=seed, data_seed=data_seed,
                                               out_dir=out, **opts)
        expect = sets[data_seed if data_seed is not None else seed]
        _, correct = RunDir(out).load_test_outcomes()  # scored on the data seed's test set
        np.testing.assert_array_equal(correct, runs[(seed, data_seed)].model.predict(
            expect.test[0]) == expect.test[1])
        assert json.loads((out / "config.json").read_text())["data_seed"] == data_seed
    # the weights follow the seed: seeds 3 and 4 on one data seed end apart
    assert not np.array_equal(runs[(3, 5)].model.params[0][0], runs[(4, 5)].model.params[0][0])
    with pytest.raises(InputError, match="data_seed"):
        fastff.train("9x2", dataset=tiny_data(), data_seed=1, updates=2, progress=False)
    with pytest.raises(InputError, match="data_seed"):
        fastff.train("9x2", seed=3, data_seed=6, out_dir=tmp_path / "3-5", resume=True, **opts)


def test_train_many_on_the_cpu_equals_training_each_alone(tmp_path):
    base = dict(dataset=tiny_data(), updates=20, eval_every=10, monitor_every=0, progress=False)
    configs = [dict(base, arch="9x2", lr=0.1, seed=1),
               dict(base, arch="7x3", lr=0.05, activation="softsign", out_dir=tmp_path / "b")]
    many = fastff.train_many(configs)
    for config, run in zip(configs, many):
        config = dict(config)
        alone = fastff.train(config.pop("arch"), **dict(config, out_dir=None))
        assert [r["valid_error"] for r in alone.history] == [r["valid_error"] for r in run.history]
        for (W1, _), (W2, _) in zip(alone.model.params, run.model.params):
            np.testing.assert_array_equal(W1, W2)
    assert many[1].dir == tmp_path / "b" and many[0].dir is None


@pytest.mark.parametrize("configs, kwargs, match", [
    ([], {}, "configs is empty"),
    ({"lr": 0.1}, {}, "must be a list of dicts"),
    ([{"lr": 0.1}, 3], {}, r"configs\[1\] must be a dict"),
    ([{"lr": -1}], {}, r"configs\[0\]: lr"),
    ([{"out_dir": "x"}, {"out_dir": "x"}], {}, "one out_dir"),
    ([{"out_dir": "x"}, {"out_dir": "./x/"}], {}, "one out_dir"),
    ([{}], {"errors": "ignore"}, "errors must be"),
    ([{}], {"device": "tpu"}, "device"),
])
def test_train_many_refuses_bad_configs_before_training(configs, kwargs, match):
    with pytest.raises(fastff.InputError, match=match):
        fastff.train_many(configs, **kwargs)
