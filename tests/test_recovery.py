"""Interrupted and partial work always resumes, and one mistake among many is named: an
interrupted ``train_many`` continued by the same call, one config that cannot run, a Ctrl-C
before the first step, damaged run records, sweep grids checked before the first run,
``reproduce --no-train`` on a missing folder, and a Trainer built by hand."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastff
from fastff import cli
from fastff.record import RunDir
from fastff.training import Trainer

from test_model_train import tiny_data

TESTS = str(Path(__file__).resolve().parent)
OPTS = dict(updates=60, eval_every=20, monitor_every=30, lr=0.1, progress=False)


def _same_run(a, b):
    """Two runs with the same history (clocks aside) and the same bits."""
    def without_clocks(history):
        return json.dumps([{k: v for k, v in row.items() if k not in ("seconds", "monitor_seconds")}
                           for row in history])
    assert without_clocks(a.history) == without_clocks(b.history)
    for (W1, b1), (W2, b2) in zip(a.model.params, b.model.params):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)


def unit_data():
    """tiny_data with inputs in [0, 1], as the auto-encoders' cross-entropy needs."""
    d = tiny_data()
    squash = lambda split: ((1 / (1 + np.exp(-split[0]))).astype(np.float32), split[1])  # noqa: E731
    return type(d)(d.name, squash(d.train), squash(d.valid), squash(d.test), d.n_classes, d.seed)


def _configs(out):
    return [dict(OPTS, arch="9x2", seed=s, dataset=tiny_data(), out_dir=str(out / f"run{s}"))
            for s in range(3)]


def _child(code):
    """Run ``code`` in a child process (it sends itself real signals); its CompletedProcess."""
    head = f"import os, signal, sys\nsys.path.insert(0, {TESTS!r})\nimport fastff\n"
    return subprocess.run([sys.executable, "-c", head + code], capture_output=True, text=True,
                          timeout=300)


# -- 1. train_many after an interrupt, on the CPU --------------------------------------------
_MANY = """
from test_model_train import tiny_data
from test_recovery import _configs
from pathlib import Path

class Signalling(type(tiny_data())):
    def train_batch(self, k, batch_size):
        if k == 33:
            os.kill(os.getpid(), signal.SIGINT)
        return super().train_batch(k, batch_size)

configs = _configs(Path({out!r}))
d = tiny_data()
configs[1]["dataset"] = Signalling(d.name, d.train, d.valid, d.test, d.n_classes, d.seed)
try:
    fastff.train_many(configs)
except fastff.Interrupted as exc:
    print(f"fastff: {{exc}}", file=sys.stderr)
    sys.exit(exc.status)
"""


def test_train_many_interrupted_on_the_cpu_names_both_kinds_and_resumes(tmp_path):
    child = _child(_MANY.format(out=str(tmp_path)))
    assert child.returncode == 130, child.stderr
    assert "interrupted at update 34; checkpoint in" in child.stderr
    assert "configs 1 stopped at their checkpoints; configs 2 had not started: call " \
           "train_many again with resume=True in every config" in child.stderr, child.stderr
    assert "Traceback" not in child.stderr
    assert RunDir(tmp_path / "run1").load_checkpoint()[1] == 34
    assert not (tmp_path / "run2").exists()
    configs = _configs(tmp_path)
    with pytest.warns(RuntimeWarning, match="run2 holds no run yet: resume=True starts it"):
        resumed = fastff.train_many([dict(c, resume=True) for c in configs])
    for run, config in zip(resumed, configs):
        _same_run(run, fastff.train(config.pop("arch"), **dict(config, out_dir=None)))


# -- 2. one config that cannot run -----------------------------------------------------------
@pytest.fixture
def no_gpu(monkeypatch):
    """A machine where device='cuda' cannot be used (whatever this one has)."""
    monkeypatch.setattr(fastff.device, "cuda_status", lambda: (False, "no CUDA GPU is usable"))


def test_one_config_without_its_device_fails_alone(tmp_path, no_gpu):
    configs = _configs(tmp_path)
    configs[1]["device"] = "cuda"
    out = fastff.train_many(configs, errors="return")
    assert isinstance(out[1], fastff.DeviceError)
    assert str(out[1]) == "configs[1]: no CUDA GPU is usable"
    assert not (tmp_path / "run1").exists()
    for i in (0, 2):
        assert isinstance(out[i], fastff.training.Run) and out[i].final["update"] == 60


def test_one_bad_config_is_raised_before_anything_trains(tmp_path, no_gpu):
    configs = _configs(tmp_path)
    configs[2]["device"] = "cuda"
    with pytest.raises(fastff.DeviceError, match=r"configs\[2\]: no CUDA GPU"):
        fastff.train_many(configs)
    assert not any(tmp_path.iterdir())
    configs[2].update(device="cpu", checkpoint_every=-1)  # a bad value: the same, both ways
    out = fastff.train_many(configs, errors="return")
    assert isinstance(out[2], fastff.InputError) and "configs[2]: checkpoint_every" in str(out[2])
    assert isinstance(out[0], fastff.training.Run) and isinstance(out[1], fastff.training.Run)


# -- 3. Ctrl-C before the first step ---------------------------------------------------------
_EARLY = """
import fastff.training.trainer as T
from fastff.cli import main
real = T.warm_up
def warm_up(*args, **kwargs):  # Ctrl-C while the step's kernels compile
    os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kwargs)
T.warm_up = warm_up
sys.exit(main({argv!r}))
"""
_ARGV = ["train", "--arch", "8x2", "--updates", "40", "--eval-every", "20", "--eval-size",
         "100", "--monitor-every", "20", "--quiet"]


@pytest.mark.parametrize("again", [[], ["--resume"]])
def test_ctrl_c_before_the_first_step_then_the_same_command_starts_it(tmp_path, again, capsys):
    out = tmp_path / "run"
    child = _child(_EARLY.format(argv=_ARGV + ["--out", str(out)]))
    assert child.returncode == 130, child.stderr
    assert f"interrupted (SIGINT) before the first checkpoint of {out}: nothing was trained; " \
           "the same command (with or without --resume, resume=True) starts it again from " \
           "update 0" in child.stderr
    assert "Traceback" not in child.stderr
    assert RunDir(out).run_files() == ["config.json"]
    with pytest.warns(RuntimeWarning, match="stopped before its first checkpoint: nothing to "
                                            "resume, it starts again from update 0"):
        assert cli.main(_ARGV + ["--out", str(out)] + again) == 0
    assert RunDir(out).load_checkpoint()[1] == 40
    fresh = tmp_path / "fresh"
    assert cli.main(_ARGV + ["--out", str(fresh)]) == 0
    (a, _, ha), (b, _, hb) = RunDir(out).load_checkpoint(), RunDir(fresh).load_checkpoint()
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert [r["test_error"] for r in ha] == [r["test_error"] for r in hb]


_PRETRAIN = """
from test_recovery import unit_data
class Signalling(type(unit_data())):
    calls = 0
    def train_batch(self, k, batch_size):
        Signalling.calls += 1
        if Signalling.calls == 15:  # in the second layer's pre-training (10 updates a layer)
            os.kill(os.getpid(), signal.SIGINT)
        return super().train_batch(k, batch_size)
d = unit_data()
data = Signalling(d.name, d.train, d.valid, d.test, d.n_classes, d.seed)
try:
    fastff.train("9x2", dataset=data, out_dir={out!r}, pretrain="dae", pretrain_updates=10,
                 **{opts!r})
except fastff.Interrupted as exc:
    print(f"fastff: {{exc}}", file=sys.stderr)
    sys.exit(exc.status)
"""


def test_ctrl_c_during_pre_training_starts_again_and_keeps_no_stale_file(tmp_path):
    out = tmp_path / "run"
    child = _child(_PRETRAIN.format(out=str(out), opts=OPTS))
    assert child.returncode == 130, child.stderr
    assert "before the first checkpoint" in child.stderr
    assert sorted(RunDir(out).run_files()) == ["config.json", "pretrain.csv"]
    with pytest.warns(RuntimeWarning, match="its pre-training is not kept"):
        run = fastff.train("9x2", dataset=unit_data(), out_dir=out, resume=True, **OPTS)
    assert run.pretrain == [] and not (out / "pretrain.csv").exists()  # not the other run's
    _same_run(run, fastff.train("9x2", dataset=unit_data(), **OPTS))


def test_a_run_with_a_checkpoint_is_still_refused_without_resume(tmp_path):
    out = tmp_path / "run"
    fastff.train("9x2", dataset=tiny_data(), out_dir=out, **OPTS)
    with pytest.raises(fastff.RecordError, match="already holds a run"):
        fastff.train("9x2", dataset=tiny_data(), out_dir=out, **OPTS)


# -- 4. damaged run records name the file and the key ----------------------------------------
@pytest.fixture(scope="module")
def shapeset_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapeset") / "run"
    fastff.train("8x1", out_dir=out, updates=20, eval_every=10, monitor_every=10, progress=False,
                 data_options=dict(valid_size=100, test_size=100))
    return out


@pytest.mark.parametrize("key, value", [
    ("shapeset_generator", "philox"), ("eval_every", 0), ("arch", [1024]),
    ("activation", "tahn"), ("lr", -0.1), ("seed", "zero"), ("pretrain", 3),
])
def test_a_damaged_value_in_config_json_names_the_file_and_the_key(tmp_path, shapeset_run,
                                                                   key, value):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(shapeset_run, out)
    config = json.loads((out / "config.json").read_text())
    config[key] = value
    (out / "config.json").write_text(json.dumps(config))
    match = rf"{out / 'config.json'} is damaged: its '{key}' fails its check"
    with pytest.raises(fastff.RecordError, match=match):
        fastff.train("8x1", out_dir=out, resume=True, updates=30, progress=False,
                     data_options=dict(valid_size=100, test_size=100))
    with pytest.raises(fastff.RecordError, match=match):
        fastff.report.load_run(out)


# -- 5. sweep grids checked before the first run ---------------------------------------------
@pytest.mark.parametrize("grid, match", [
    (dict(lr=0.1, checkpoint_every=[10, -1]), r"grid point 2 of 2 \(.*\): checkpoint_every"),
    (dict(lr=[0.1, 0.3], activation=["tanh", "tahn"]), r"grid point 2 of 4 .*unknown activation"),
    ([dict(lr=0.1), dict(arch="10y")], r"grid point 2 of 2 .*cannot parse architecture"),
    (dict(updates=[100, 0]), r"grid point 2 of 2 .*updates must be a positive integer"),
])
def test_a_sweep_checks_every_point_before_the_first_run(tmp_path, grid, match):
    with pytest.raises(fastff.InputError, match=match):
        fastff.sweep(grid, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_the_sweep_command_refuses_a_bad_point_in_one_line(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(dict(lr=[0.1, 0.03], checkpoint_every=-5)))
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastff: error: grid point 1 of 2") and "checkpoint_every" in err
    assert not (tmp_path / "sweep").exists()


# -- 6. reproduce --no-train on a folder that holds no reproduction --------------------------
@pytest.mark.parametrize("make", [False, True])
def test_reproduce_no_train_refuses_a_folder_without_a_reproduction(tmp_path, capsys, make):
    out = tmp_path / "reproductoin"
    if make:
        out.mkdir()
    assert cli.main(["reproduce", "glorot2010", "--budget", "smoke", "--no-train", "--out",
                     str(out)]) == 2
    err = capsys.readouterr().err
    assert ("does not exist" if not make else "holds no reproduction") in err
    assert not out.exists() if not make else not any(out.iterdir())


# -- 7. a Trainer built by hand ---------------------------------------------------------------
def test_a_trainer_built_by_hand_checks_its_options(tmp_path):
    run = Trainer("9x2", dict(OPTS, dataset=tiny_data(), out_dir=tmp_path / "run")).run()
    _same_run(run, fastff.train("9x2", dataset=tiny_data(), **OPTS))
    assert (tmp_path / "run" / "checkpoint.npz").is_file()
    with pytest.raises(fastff.InputError, match="lr must be a positive number"):
        Trainer("9x2", dict(OPTS, lr=-1))
    with pytest.raises(fastff.InputError, match="unknown option.*'learning_rate'"):
        Trainer("9x2", dict(learning_rate=0.1))
    with pytest.raises(fastff.InputError, match="must be a dict of train"):
        Trainer("9x2", [("lr", 0.1)])
