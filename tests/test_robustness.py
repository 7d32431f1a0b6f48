"""Bad input gets a clear fastff error and loses nothing; a run record holds one run's data."""
import io
import json
import os
import tarfile
import warnings

import numpy as np
import pytest

import fastff
from fastff import cli, config
from fastff.data import ArrayDataset, Dataset
from fastff.errors import DataError, InputError, RecordError
from fastff.kernels import BackwardStats, ForwardStats, cpu, reference as ref
from fastff.record import RunDir

from conftest import stable_seed
from test_model_train import tiny_data

BACKENDS = [cpu, ref]


def layer(rng, batch=10, n_in=20, n_out=30, dtype=np.float32):
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    return x, W, np.zeros(n_out, dtype)


# -- 1. statistics made for another layer ---------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS, ids=["cpu", "reference"])
@pytest.mark.parametrize("stats, match", [
    (lambda: ForwardStats(3, "tanh"), "made for 3 units but the layer has 30"),
    (lambda: ForwardStats(30, "sigmoid"), "count 'sigmoid' saturation but the layer is 'tanh'"),
    (lambda: BackwardStats(30), "must be a ForwardStats"),
    (lambda: {}, "must be a ForwardStats"),
])
def test_forward_refuses_statistics_of_another_layer(rng, backend, stats, match):
    x, W, b = layer(rng)
    with pytest.raises(InputError, match=match):
        backend.dense_forward(x, W, b, "tanh", stats=stats())


@pytest.mark.parametrize("backend", BACKENDS, ids=["cpu", "reference"])
def test_backward_refuses_statistics_of_another_layer(rng, backend):
    x, W, b = layer(rng)
    h = np.tanh(x @ W)
    W0 = W.copy()
    for bad, match in ((BackwardStats(3), "made for 3 units"), (ForwardStats(30, "tanh"), "BackwardStats")):
        with pytest.raises(InputError, match=match):
            backend.dense_backward_sgd(x, h, W, b, h, "tanh", 0.1, stats=bad)
    np.testing.assert_array_equal(W, W0)  # refused before anything was written


def test_tampered_statistics_are_refused(rng):
    x, W, b = layer(rng)
    st = ForwardStats(30, "tanh")
    st.hist = np.zeros(7, np.int64)  # bins no longer match the histogram
    with pytest.raises(InputError, match="hist"):
        cpu.dense_forward(x, W, b, "tanh", stats=st)
    st = ForwardStats(30, "tanh")
    st.total = st.total.astype(np.float32)
    with pytest.raises(InputError, match="total must be .* float64"):
        cpu.dense_forward(x, W, b, "tanh", stats=st)
    bs = BackwardStats(30)
    bs.counts = np.zeros(1, np.int64)
    with pytest.raises(InputError, match="counts"):
        cpu.dense_backward_sgd(x, np.tanh(x @ W), W, b, np.ones((10, 30), np.float32), "tanh",
                               0.1, stats=bs)


@pytest.mark.parametrize("other", ["20-31-30-3", "20-30-3", "20-30-30-4"])
def test_step_refuses_statistics_of_another_network(rng, other):
    net = fastff.MLP("20-30-30-3", seed=0)
    W0 = net.params[0][0].copy()
    x = rng.standard_normal((10, 20)).astype(np.float32)
    with pytest.raises(InputError, match="made for a .* network"):
        net.step(x, np.zeros(10, np.int64), 0.1, stats=fastff.MLP(other).new_stats())
    with pytest.raises(InputError, match="count 'sigmoid'"):
        stats = net.new_stats()
        stats.forward[1] = ForwardStats(30, "sigmoid")
        net.step(x, np.zeros(10, np.int64), 0.1, stats=stats)
    with pytest.raises(InputError, match="model.new_stats"):
        net.step(x, np.zeros(10, np.int64), 0.1, stats={})
    np.testing.assert_array_equal(net.params[0][0], W0)


def test_step_refuses_statistics_of_another_activation(rng):
    net = fastff.MLP("20-30-3", activation="tanh")
    with pytest.raises(InputError, match="sigmoid"):
        net.step(rng.standard_normal((4, 20)).astype(np.float32), np.zeros(4, np.int64), 0.1,
                 stats=fastff.MLP("20-30-3", activation="sigmoid").new_stats())


@pytest.mark.parametrize("mutate", [
    lambda s: setattr(s.forward[1], "hist", np.zeros(3, np.int64)),
    lambda s: setattr(s.forward[1], "bins", 7),
    lambda s: setattr(s.backward[0], "counts", np.zeros(1, np.int64)),
    lambda s: s.forward.__setitem__(1, ForwardStats(30, "sigmoid")),
    lambda s: s.backward.pop(),
])
def test_statistics_changed_after_a_step_are_checked_again(rng, mutate):
    # MLP.step checks its statistics fully once, then only that nothing was swapped or set
    net = fastff.MLP("20-30-30-3")
    x, y = rng.standard_normal((10, 20)).astype(np.float32), np.zeros(10, np.int64)
    stats = net.new_stats()
    net.step(x, y, 0.1, stats)
    mutate(stats)
    with pytest.raises(InputError):
        net.step(x, y, 0.1, stats)


def test_checked_statistics_cannot_be_resized_in_place(rng):
    net = fastff.MLP("20-30-3")
    stats = net.new_stats()
    net.step(rng.standard_normal((4, 20)).astype(np.float32), np.zeros(4, np.int64), 0.1, stats)
    with pytest.raises(ValueError, match="cannot resize"):
        stats.backward[0].delta_total.resize(3)


@pytest.mark.parametrize("call", [
    lambda: ForwardStats(-1, "tanh"), lambda: ForwardStats(0, "tanh"), lambda: BackwardStats(2.5),
    lambda: ForwardStats(3, "tanh", bins=0),
])
def test_statistics_refuse_bad_sizes(call):
    with pytest.raises(InputError, match="positive integer"):
        call()


# -- 2, 10. datasets are checked where they are built, or batch by batch ----------------------
@pytest.mark.parametrize("label", [3, 100_000_000, -1, -100])
def test_array_dataset_refuses_labels_out_of_range(label):
    d = tiny_data()
    y = d.train[1].copy()
    y[5] = label
    with pytest.raises(InputError, match=r"train: labels must lie in \[0, 3\)"):
        ArrayDataset("blobs", (d.train[0], y), d.valid, d.test, 3)


@pytest.mark.parametrize("damage, match", [
    (lambda x: x.astype(np.uint8), "uint8 .*scale integer pixels"),
    (lambda x: np.where(np.arange(x.shape[1]) == 3, np.nan, x).astype(np.float32), "NaN or inf"),
    (lambda x: x[:, :5], "5 features, the training set 12"),
])
def test_array_dataset_refuses_bad_inputs(damage, match):
    d = tiny_data()
    with pytest.raises(InputError, match=match):
        ArrayDataset("blobs", d.train, (damage(d.valid[0]), d.valid[1]), d.test, 3)


class Custom(Dataset):
    """A user's dataset whose batches are whatever ``make(k)`` returns."""

    name, n_in, n_classes = "custom", 12, 3

    def __init__(self, make):
        base = tiny_data()
        self.valid, self.test, self._make, self._base = base.valid, base.test, make, base

    def train_batch(self, k, batch_size):
        x, y = self._base.train_batch(k, batch_size)
        return self._make(k, x.copy(), y.copy())


def _bad_label(value):
    def make(k, x, y):
        y[2] = value if k == 3 else y[2]
        return x, y
    return make


@pytest.mark.parametrize("make, match", [
    (_bad_label(3), r"training batch 3 .*labels must lie in \[0, 3\)"),
    (_bad_label(100_000_000), r"training batch 3 .*labels"),
    (_bad_label(-1), r"training batch 3 .*labels"),
    (_bad_label(-100), r"training batch 3 .*labels"),
    (lambda k, x, y: (np.where(k == 2, np.nan, x), y), "training batch 2 .*NaN"),
    (lambda k, x, y: ((x * 40).astype(np.uint8), y), "uint8"),
    (lambda k, x, y: (x.astype(np.float64) * (1e300 if k == 1 else 1), y), "as float32 contains NaN or inf"),
    (lambda k, x, y: (x[:7], y[:7]), "7 rows, batch_size is 10"),
])
def test_train_checks_every_batch_of_a_custom_dataset(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        fastff.train("8", dataset=Custom(make), updates=6, eval_every=2, progress=False,
                     out_dir=tmp_path)
    state, update, _ = RunDir(tmp_path).load_checkpoint()  # the last good checkpoint remains
    assert update <= 3 and all(np.isfinite(v).all() for v in state.values())


def test_float64_beyond_float32_range_is_refused_for_an_array_dataset():
    d = tiny_data()
    big = (d.train[0].astype(np.float64), d.train[1])
    big[0][0, 0] = 1e300
    data = ArrayDataset("big", big, d.valid, d.test, 3)
    with pytest.raises(InputError, match="beyond the range of float32"):
        fastff.train("8", dataset=data, updates=2, progress=False)


# -- 3-6. run records ------------------------------------------------------------------------
SMALL = dict(dataset="shapeset", arch="16x2", updates=20, progress=False,
             data_options=dict(valid_size=40, test_size=40))


def test_a_directory_holding_a_run_is_refused_then_overwritten_whole(tmp_path):
    fastff.train(activation="tanh", **SMALL, out_dir=tmp_path)
    assert (tmp_path / "stats.npz").is_file()
    before = (tmp_path / "config.json").read_bytes()
    with pytest.raises(RecordError, match="already holds a run .*--overwrite"):
        fastff.train(activation="sigmoid", **{**SMALL, "arch": "16x3"}, monitor_every=0, out_dir=tmp_path)
    assert (tmp_path / "config.json").read_bytes() == before  # refused: nothing lost
    (tmp_path / "figures").mkdir()
    (tmp_path / "mine.txt").write_text("not the run's")
    fastff.train(activation="sigmoid", **{**SMALL, "arch": "16x3"}, monitor_every=0,
                 out_dir=tmp_path, overwrite=True)
    assert not (tmp_path / "stats.npz").exists() and not (tmp_path / "figures").exists()
    assert (tmp_path / "mine.txt").read_text() == "not the run's"
    assert json.loads((tmp_path / "config.json").read_text())["activation"] == "sigmoid"
    pytest.importorskip("matplotlib")
    from fastff.report import report
    page = report([tmp_path], tmp_path / "rep").read_text()
    runs = page[page.index("<table>"):page.index("</table>")]  # the runs shown (captions are fixed text)
    assert "sigmoid" in runs and "tanh" not in runs


def test_extending_a_run_works_with_the_default_cadences(tmp_path):
    opts = {**SMALL, "updates": 50}
    full = fastff.train(**{**opts, "updates": 80}, eval_every=5, monitor_every=5)
    fastff.train(**opts, out_dir=tmp_path)
    extended = fastff.train(**{**opts, "updates": 80}, out_dir=tmp_path, resume=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["updates"] == 80 and cfg["eval_every"] == 5 and cfg["monitor_every"] == 5
    assert [h["update"] for h in extended.history] == list(range(0, 81, 5))
    for (Wa, _), (Wb, _) in zip(full.model.params, extended.model.params):
        np.testing.assert_array_equal(Wa, Wb)
    with pytest.raises(InputError, match="eval_every"):
        fastff.train(**{**opts, "updates": 90}, out_dir=tmp_path, resume=True, eval_every=7)


def test_resuming_with_fewer_updates_is_refused_and_changes_nothing(tmp_path):
    fastff.train(**SMALL, out_dir=tmp_path)
    before = {f: (tmp_path / f).read_bytes() for f in ("config.json", "checkpoint.npz")}
    with pytest.raises(InputError, match="already done 20"):
        fastff.train(**{**SMALL, "updates": 10}, out_dir=tmp_path, resume=True)
    assert before == {f: (tmp_path / f).read_bytes() for f in before}
    done = fastff.train(**SMALL, out_dir=tmp_path, resume=True)  # nothing left: the saved run
    assert done.final["update"] == 20
    assert before == {f: (tmp_path / f).read_bytes() for f in before}


def test_resumed_clock_goes_on(tmp_path):
    fastff.train(**SMALL, out_dir=tmp_path)
    first = RunDir(tmp_path).load_checkpoint()[2][-1]["seconds"]
    run = fastff.train(**{**SMALL, "updates": 30}, out_dir=tmp_path, resume=True, eval_every=2)
    assert run.history[-1]["seconds"] >= first > 0


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _rewrite_checkpoint(p, change):
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    p.write_bytes(buf.getvalue())


@pytest.mark.parametrize("name, damage, match", [
    ("checkpoint.npz", _truncate, "checkpoint.npz cannot be read"),
    ("stats.npz", _truncate, "stats.npz cannot be read"),
    ("config.json", _truncate, "config.json is damaged"),
    ("config.json", lambda p: p.write_text("[]"), "config.json is not a fastff run configuration"),
    ("checkpoint.npz", lambda p: _rewrite_checkpoint(p, lambda a: a.update(W1=a["W1"][:3])),
     r"checkpoint.npz does not fit this run: state\['W1'\]"),
    ("checkpoint.npz", lambda p: _rewrite_checkpoint(p, lambda a: a.pop("history")),
     "checkpoint.npz cannot be read"),
    ("checkpoint.npz", lambda p: _rewrite_checkpoint(p, lambda a: a.update(update=np.int64(7))),
     "not a consistent fastff checkpoint"),
    ("stats.npz", lambda p: _rewrite_checkpoint(p, lambda a: a.update(act_std=a["act_std"][:, :1])),
     "inconsistent fastff stats file"),
])
def test_damaged_files_give_errors_naming_the_file(tmp_path, name, damage, match):
    fastff.train(**SMALL, out_dir=tmp_path)
    damage(tmp_path / name)
    with pytest.raises(RecordError, match=match):
        fastff.train(**{**SMALL, "updates": 30}, out_dir=tmp_path, resume=True)
    if name != "checkpoint.npz":
        pytest.importorskip("matplotlib")
        from fastff.report import report
        with pytest.raises(RecordError, match=name):
            report([tmp_path], tmp_path / "rep")


def test_load_state_names_what_is_missing_or_wrong():
    net = fastff.MLP("4-5-2")
    state = net.state()
    W0 = net.params[0][0].copy()
    with pytest.raises(InputError, match="lacks b1"):
        net.load_state({k: v for k, v in state.items() if k != "b1"})
    with pytest.raises(InputError, match=r"state\['W0'\] .*shape \(4, 5\)"):
        net.load_state({**state, "W0": np.zeros((5, 4))})
    with pytest.raises(InputError, match="NaN"):
        net.load_state({**state, "W1": np.full((5, 2), np.nan)})
    with pytest.raises(InputError, match="dict of arrays"):
        net.load_state([1, 2])
    np.testing.assert_array_equal(net.params[0][0], W0)


# -- 8. what was not measured is NaN --------------------------------------------------------
def test_unmeasured_statistics_are_nan_and_summary_checks_sizes(rng):
    net = fastff.MLP("6-5-4-3")
    stats = net.new_stats()  # weight_grad off
    net.step(rng.standard_normal((4, 6)).astype(np.float32), np.zeros(4, np.int64), 0.1, stats)
    rows = stats.summary()
    assert np.isnan(rows[0]["grad_w_std"]) and np.isfinite(rows[0]["delta_std"])
    assert np.isnan(net.new_stats(weight_grad=True).summary()[0]["delta_std"])  # no rows yet
    with pytest.raises(InputError, match="belong to a 6-5-4-3 network"):
        stats.summary([6, 5, 3])
    assert len(stats.summary(net.sizes)) == 2


# -- 9. thread counts are recorded, a resume with other counts warns ------------------------
def test_thread_counts_are_recorded_and_a_change_warns_above_the_small_batch(tmp_path):
    opts = {**SMALL, "batch_size": config.CPU_SMALL_BATCH_MAX + 4}
    fastff.train(**opts, out_dir=tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["threads"]["numba"] >= 1 and "blas" in cfg["threads"]
    cfg["threads"]["blas"] = 999
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.warns(RuntimeWarning, match="999 BLAS threads"):
        fastff.train(**{**opts, "updates": 30}, out_dir=tmp_path, resume=True)


# -- 11, 12. sizes and arguments ------------------------------------------------------------
def test_a_batch_that_cannot_fit_in_memory_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr("fastff.data.sources.available_memory", lambda: 2**30)
    with pytest.raises(DataError, match="batch_size=10000000 .*GiB"):
        fastff.train(**{**SMALL, "batch_size": 10_000_000})


@pytest.mark.parametrize("kwargs, match", [
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(lr="0.01"), "lr must be a positive number"),
    (dict(lr=None), "lr must be a positive number"),
    (dict(lr=np.array([0.01])), "lr must be a positive number"),
    (dict(data_options={"bogus": 1}), "unknown option bogus for dataset 'shapeset'; valid: valid_size"),
    (dict(data_options=[1]), "data_options must be a dict"),
    (dict(arch="784-20-10"), "dataset has 1024 inputs and 9 classes"),
    (dict(resume=True, overwrite=True, out_dir="x"), "choose one"),
    (dict(progress="yes"), "progress must be True or False"),
    (dict(dataset=3), "dataset must be a name"),
])
def test_train_rejects_bad_arguments_clearly(kwargs, match):
    with pytest.raises(InputError, match=match):
        fastff.train(**{**SMALL, **kwargs})


def test_out_that_is_not_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RecordError, match="not a directory"):
        fastff.train(**SMALL, out_dir=f)
    with pytest.raises(RecordError, match="not a directory"):
        fastff.train(**SMALL, out_dir="/dev/null")


@pytest.mark.parametrize("argv, match", [
    (["train", "--seed", "-1", "--quiet"], "seed must be a non-negative integer"),
    (["train", "--out", "/dev/null", "--quiet"], "/dev/null exists and is not a directory"),
    (["data", "show", "shapeset", "--out", "/nonexistent/x.png"], "/nonexistent does not exist"),
    (["data", "show", "shapeset", "--rows", "-1"], "--rows must be a positive integer, got -1"),
    (["train", "--arch", "1024-9-9-5", "--quiet"], "dataset has 1024 inputs"),
])
def test_cli_errors_are_one_line(argv, match, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastff: error:") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(match, err), err


# -- 13. a newcomer's first hour ------------------------------------------------------------
def test_cli_help_and_version(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"fastff {fastff.__version__}"
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = capsys.readouterr().out
    for needle in ("(default: 0.01)", "(default: 1000x5)", "--overwrite", "(default: 10000)",
                   "learning rate", "updates between evaluations"):
        assert needle in help_text


def test_summary_lists_only_files_written(tmp_path, capsys):
    assert cli.main(["train", "--arch", "8", "--updates", "4", "--eval-size", "30", "--quiet",
                     "--monitor-every", "0", "--out", str(tmp_path)]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("run record")][0]
    assert "stats.npz" not in line and "checkpoint.npz" in line


def test_compile_notice_speaks_once(capsys):
    from fastff.training.warmup import CompileNotice
    notice = CompileNotice(True)
    notice.on_start(None)
    notice.on_start(None)
    notice.done()
    err = capsys.readouterr().err
    assert err.count("compiling kernels") == 1 and "kernels ready" in err
    silent = CompileNotice(True)
    silent.done()
    assert capsys.readouterr().err == ""


def test_kernels_compiled_while_the_data_loads_are_announced_and_counted(monkeypatch, capsys):
    # a first run compiles the data's kernels, then the step's: one notice, from the first of
    # them to the last (fresh jitted functions stand for a cold cache)
    import time
    import numba
    from fastff.training import trainer

    @numba.njit
    def fresh_data(x):
        return x + 1

    @numba.njit
    def fresh_step(x):
        return x + 2

    real_load, real_warm_up = trainer._load_data, trainer.warm_up

    def load(v, saved):
        fresh_data(1)
        time.sleep(1.1)  # what it costs
        return real_load(v, saved)

    def warm_up(*args, **kwargs):
        fresh_step(1)
        time.sleep(1.1)
        return real_warm_up(*args, **kwargs)

    monkeypatch.setattr(trainer, "_load_data", load)
    monkeypatch.setattr(trainer, "warm_up", warm_up)
    fastff.train("8", dataset=tiny_data(), updates=2, progress=True, monitor_every=0)
    err = capsys.readouterr().err
    assert err.count("compiling kernels") == 1 and err.count("kernels ready") == 1
    assert int(err.split("kernels ready (")[1].split(" s)")[0]) >= 2


def test_divergence_leaks_no_numpy_warnings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(fastff.DivergenceError):
            fastff.train("64x3", dataset=tiny_data(), activation="relu", init="normal",
                         lr=1e4, updates=200, eval_every=1, batch_size=20, progress=False,
                         monitor_every=0)


def test_cached_data_files_get_the_usual_permissions(tmp_path):
    from fastff.data.sources import install_verified, md5
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 100)
    dest = tmp_path / "cache" / "a.bin"
    install_verified(src, dest, md5(src))
    mask = os.umask(0)
    os.umask(mask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("has_filter", [True, False])
def test_safe_extract_with_and_without_tarfile_filters(tmp_path, monkeypatch, has_filter):
    from fastff.data.sources import safe_extract
    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("pkg/ok.txt", "../evil.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    out = tmp_path / "out"
    out.mkdir()
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        safe_extract(tar, members["pkg/ok.txt"], out)
        with pytest.raises((DataError, tarfile.TarError)):
            safe_extract(tar, members["../evil.txt"], out)
    assert (out / "pkg" / "ok.txt").read_bytes() == b"hi" and not (tmp_path / "evil.txt").exists()


# -- 16. seeds that a rerun can reproduce ---------------------------------------------------
def test_test_seeds_are_stable_across_processes():
    import subprocess
    import sys
    code = "import zlib; print(zlib.crc32(b'test_x'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
            for _ in range(2)}
    assert outs == {f"{stable_seed('test_x')}\n"}
