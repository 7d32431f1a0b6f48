"""Interruptions keep the work: SIGINT and SIGTERM during a run (real signals, in child
processes), checkpoints every ``checkpoint_every`` seconds, and runs resumed from a checkpoint
written between evaluations that are the uninterrupted run, bit for bit."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastff
from fastff.record import RunDir

from test_model_train import tiny_data

TESTS = str(Path(__file__).resolve().parent)
OPTS = dict(arch="7x2", lr=0.1, updates=120, eval_every=50, monitor_every=40, progress=False)

# A child that trains on tiny_data and sends itself ``sig`` (a real signal) while batch
# ``at`` is being drawn, i.e. in the middle of the run's step loop; it ends as the command
# line does (the message on stderr, status 128 + signal).
_CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import fastff
from test_model_train import tiny_data

class Signalling(type(tiny_data())):
    def train_batch(self, k, batch_size):
        if k in {at!r}:
            os.kill(os.getpid(), {sig})
        return super().train_batch(k, batch_size)

d = tiny_data()
data = Signalling(d.name, d.train, d.valid, d.test, d.n_classes, d.seed)
{extra}
try:
    fastff.train(dataset=data, out_dir={out!r}, **{opts!r})
except fastff.Interrupted as exc:
    print(f"fastff: {{exc}}", file=sys.stderr)
    sys.exit(exc.status)
print("finished")
"""


def _child(out, sig, at, extra="", **opts):
    code = _CHILD.format(tests=TESTS, at=list(at), sig=int(sig), out=str(out), extra=extra,
                         opts={**OPTS, **opts})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def _without_clocks(history):
    """The history as text (NaN equals NaN there), without the clocks."""
    return json.dumps([{k: v for k, v in row.items() if k not in ("seconds", "monitor_seconds")}
                       for row in history])


def _same_run(a, b):
    assert _without_clocks(a.history) == _without_clocks(b.history)
    for (W1, b1), (W2, b2) in zip(a.model.params, b.model.params):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    assert len(a.stats) == len(b.stats)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_finishes_the_step_saves_and_resumes_as_if_nothing_happened(tmp_path, sig, status):
    out = tmp_path / "run"
    child = _child(out, sig, at=[73])
    assert child.returncode == status, child.stderr
    assert "interrupted at update 74; checkpoint in" in child.stderr
    assert "continue with --resume" in child.stderr and "Traceback" not in child.stderr
    state, update, history = RunDir(out).load_checkpoint()
    assert update == 74 and history[-1]["update"] == 50
    resumed = fastff.train(dataset=tiny_data(), out_dir=out, resume=True, **OPTS)
    _same_run(resumed, fastff.train(dataset=tiny_data(), **OPTS))


# the second Ctrl-C comes while the first one's checkpoint is being written
_SECOND = """
from fastff.record import RunDir
save = RunDir.save_checkpoint
def save_and_signal(self, model, update, *args, **kwargs):
    if update == 31:
        os.kill(os.getpid(), signal.SIGINT)
    return save(self, model, update, *args, **kwargs)
RunDir.save_checkpoint = save_and_signal
"""


def test_a_second_signal_stops_at_once_and_damages_nothing(tmp_path):
    out = tmp_path / "run"
    child = _child(out, signal.SIGINT, at=[30], extra=_SECOND)
    assert child.returncode == 130, child.stderr
    assert "fastff: interrupted (SIGINT)" in child.stderr and "Traceback" not in child.stderr
    state, update, history = RunDir(out).load_checkpoint()  # whole: the one of update 0
    assert update == 0
    resumed = fastff.train(dataset=tiny_data(), out_dir=out, resume=True, **OPTS)
    _same_run(resumed, fastff.train(dataset=tiny_data(), **OPTS))


class _Crashing(type(tiny_data())):
    """A dataset whose batch ``crash_at`` fails: the process dies as if killed there."""

    crash_at = None

    def train_batch(self, k, batch_size):
        if k == self.crash_at:
            raise RuntimeError("killed")
        return super().train_batch(k, batch_size)


def test_checkpoints_every_few_seconds_between_evaluations(tmp_path, monkeypatch):
    d = tiny_data()
    data = _Crashing(d.name, d.train, d.valid, d.test, d.n_classes, d.seed)
    data.crash_at = 87
    ticks = iter(range(10**6))  # each reading of the trainer's clock: one more second
    monkeypatch.setattr("fastff.training.trainer.clock", lambda: float(next(ticks)))
    with pytest.raises(RuntimeError, match="killed"):
        fastff.train(dataset=data, out_dir=tmp_path, checkpoint_every=1, **OPTS)
    monkeypatch.undo()
    _, update, history = RunDir(tmp_path).load_checkpoint()
    assert update == 87 and history[-1]["update"] == 50  # lost nothing since the evaluation
    resumed = fastff.train(dataset=tiny_data(), out_dir=tmp_path, resume=True, **OPTS)
    _same_run(resumed, fastff.train(dataset=tiny_data(), **OPTS))


def test_checkpoint_every_zero_writes_only_at_evaluations(tmp_path, monkeypatch):
    d = tiny_data()
    data = _Crashing(d.name, d.train, d.valid, d.test, d.n_classes, d.seed)
    data.crash_at = 87
    with pytest.raises(RuntimeError, match="killed"):
        fastff.train(dataset=data, out_dir=tmp_path, checkpoint_every=0, **OPTS)
    assert RunDir(tmp_path).load_checkpoint()[1] == 50


@pytest.mark.parametrize("bad", [-1, "300", float("nan"), float("inf"), True])
def test_checkpoint_every_is_checked(bad):
    with pytest.raises(fastff.InputError, match="checkpoint_every"):
        fastff.train(dataset=tiny_data(), checkpoint_every=bad, **OPTS)


def test_the_command_line_stops_cleanly_on_ctrl_c(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastff.cli", "train", "--arch", "8x2", "--updates", "10000000",
           "--eval-size", "100", "--eval-every", "1000000", "--monitor-every", "0", "--quiet",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (out / "checkpoint.npz").is_file():  # update 0's checkpoint: it is stepping
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "fastff: interrupted at update" in err and "Traceback" not in err
    update = RunDir(out).load_checkpoint()[1]
    assert update > 0 and f"interrupted at update {update};" in err
