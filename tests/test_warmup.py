"""The serial twins of the small-batch passes, and the parallel ones compiled in another process
while a run steps with the serial ones (fastff/training/warmup.py)."""
import sys
import subprocess

import numpy as np
import pytest

import fastff
from fastff.training import warmup
from fastff.training.threads import ThreadChoice


@pytest.mark.parametrize("optimizer", ["sgd", "diag_hessian", "grad_variance"])
@pytest.mark.parametrize("batch", [7, 10])
def test_serial_twins_step_bit_for_bit_as_the_parallel_passes(rng, optimizer, batch):
    x = rng.standard_normal((batch, 37)).astype(np.float32)
    y = rng.integers(0, 5, batch)
    nets = []
    for parallel in (True, False):
        net = fastff.MLP([37, 29, 31, 5], activation="tanh", seed=3)
        net.plan.set_parallel(parallel)
        rates = net.new_rates(optimizer) if optimizer != "sgd" else None
        stats = net.new_stats(weight_grad=True)
        for _ in range(3):
            net.step(x, y, 0.05, stats=stats, rates=rates)
        nets.append((net, stats.summary()))
    (a, sa), (b, sb) = nets
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)
    assert str(sa) == str(sb)


def test_the_parallel_passes_arrive_from_the_compiling_process():
    net = fastff.MLP([11, 13, 3], activation="softsign", seed=1)
    key_batch = 9
    pending = warmup.ParallelCompile(net, key_batch, "sgd")
    assert not net.plan.parallel  # the warm-up and the first steps: serial twins
    pending.start(compiled=True)  # as after a warm-up that compiled: a cold cache
    assert pending.pending and not net.plan.parallel
    pending.process.wait(timeout=600)
    pending.poll()
    assert net.plan.parallel and not pending.pending
    assert pending.key in warmup._COMPILED
    again = fastff.MLP([8, 4, 4], activation="sigmoid", seed=2)  # other widths, same code
    assert not warmup.ParallelCompile(again, key_batch, "sgd").pending  # known: parallel at once
    assert again.plan.parallel


def test_a_failed_compiling_process_leaves_the_run_serial_with_a_warning():
    net = fastff.MLP([6, 7, 2], activation="relu")
    pending = warmup.ParallelCompile(net, 5, "sgd")
    pending.start(compiled=True)
    pending.process.wait(timeout=600)
    pending.process = subprocess.Popen([sys.executable, "-c", "import sys; "
                                        "sys.stderr.write('no compiler today'); sys.exit(3)"],
                                       stderr=pending.errors)
    pending.process.wait(timeout=60)
    with pytest.warns(RuntimeWarning, match="exit 3: no compiler today"):
        pending.poll()
    assert not net.plan.parallel
    pending.close()
    assert net.plan.parallel  # after the run, as any MLP


def test_large_batches_and_other_backends_need_no_compiling_process():
    assert not warmup.ParallelCompile(fastff.MLP([6, 7, 2]), 64, "sgd").pending
    ref = fastff.MLP([6, 7, 2], kernels="reference")
    assert not warmup.ParallelCompile(ref, 10, "sgd").pending


def test_a_warm_cache_loads_the_parallel_passes_at_once():
    net = fastff.MLP([5, 6, 2], activation="tanh", dtype="float64")
    pending = warmup.ParallelCompile(net, 4, "sgd")
    warmup.warm_up(net, 4)
    pending.start(compiled=False)  # the serial warm-up found everything in the cache
    assert not pending.pending and net.plan.parallel and pending.key in warmup._COMPILED


def test_a_process_launched_before_a_warm_warm_up_is_stopped():
    net = fastff.MLP([5, 6, 2], activation="relu", dtype="float64")
    warmup.warm_up(net, 3)  # everything this test needs is in the cache now
    pending = warmup.ParallelCompile(fastff.MLP([5, 6, 2], activation="relu", dtype="float64"), 3,
                                     "sgd")
    if not pending.waiting:
        pytest.skip("this process compiled these passes already")
    pending.launch()  # as fastff.train does: the two compile at once
    process = pending.process
    assert process is not None
    pending.start(compiled=False)
    assert process.poll() is not None and not pending.pending and pending.model.plan.parallel


def test_no_probe_tries_the_parallel_passes_before_they_compile_or_after_they_failed(
        monkeypatch):
    import numba
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    net = fastff.MLP([6, 7, 2], activation="relu")
    pending = warmup.ParallelCompile(net, 5, "sgd")
    choice = ThreadChoice(net, 5, pending)
    assert choice.enabled and not pending.ready
    choice.next_probe = 0.0
    choice.tick()
    assert choice.trying is None and not net.plan.parallel  # waits: not compiled yet
    pending.start(compiled=True)
    pending.process.wait(timeout=600)
    pending.process = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"],
                                       stderr=pending.errors)
    pending.process.wait(timeout=60)
    with pytest.warns(RuntimeWarning, match="exit 3"):
        pending.poll()
    for _ in range(100):
        choice.tick()
    assert choice.trying is None and choice.probes == 0 and not net.plan.parallel


# -- the choice between the parallel passes and their serial twins (training/threads.py) ------

def _drive(monkeypatch, serial_s, parallel_s, steps=200, batch=10, threads=2, ready=True):
    """A ThreadChoice on a fake clock whose steps take ``serial_s`` or ``parallel_s``."""
    import numba
    from fastff import config
    monkeypatch.setattr(numba, "get_num_threads", lambda: threads)
    monkeypatch.setattr(config, "CPU_THREADS_FIRST_PROBE_S", 0.05)
    monkeypatch.setattr(config, "CPU_THREADS_PROBE_EVERY_S", 0.2)
    monkeypatch.setattr(config, "CPU_THREADS_PROBE_STEPS", 5)
    net = fastff.MLP([6, 7, 2], activation="tanh")
    now = [0.0]

    class Compiling:
        pass
    compiling = Compiling()
    compiling.ready = ready
    choice = ThreadChoice(net, batch, compiling, clock=lambda: now[0])
    used = []
    for _ in range(steps):
        used.append(net.plan.parallel)
        now[0] += parallel_s if net.plan.parallel else serial_s
        choice.tick()
    return choice, net, used


@pytest.mark.parametrize("serial_s, parallel_s, chosen", [(0.004, 0.0025, True),
                                                         (0.004, 0.009, False)])
def test_a_run_keeps_whichever_passes_step_faster(monkeypatch, serial_s, parallel_s, chosen):
    # quiet (parallel faster) and busy (the threads wait for each other: serial faster)
    choice, net, used = _drive(monkeypatch, serial_s, parallel_s)
    assert choice.probes >= 2 and choice.serial_chosen == (0 if chosen else choice.probes)
    assert net.plan.parallel == chosen
    # after 0.05 s a probe: 5 serial then 5 parallel steps; between probes, the choice
    first = used.index(False)
    assert first == round(0.05 / 0.0025) if chosen else first > 0
    assert used[first:first + 10] == [False] * 5 + [True] * 5
    assert used[first + 10:first + 20] == [chosen] * 10


@pytest.mark.parametrize("kwargs", [dict(threads=1), dict(batch=17), dict(ready=False)])
def test_no_probe_where_there_is_no_choice(monkeypatch, kwargs):
    # one thread, the large-batch path, or parallel passes that are not compiled
    choice, net, used = _drive(monkeypatch, 0.004, 0.009, **kwargs)
    assert choice.probes == 0 and all(used) and net.plan.parallel


@pytest.mark.parametrize("pretrain", [None, "dae"])
def test_probing_changes_no_number(monkeypatch, tmp_path, pretrain):
    # a run that switches between the passes all the time (in its pre-training too) gives the
    # numbers of one that never does
    from fastff import config
    from test_model_train import tiny_data
    opts = dict(dataset=tiny_data(), lr=0.1, updates=60, eval_every=20, monitor_every=30,
                progress=False)
    if pretrain:  # it reconstructs inputs in [0, 1]
        from fastff.data.base import ArrayDataset
        d = opts["dataset"]
        squash = lambda split: ((1 / (1 + np.exp(-split[0]))).astype(np.float32), split[1])
        opts.update(dataset=ArrayDataset("blobs01", squash(d.train), squash(d.valid),
                                         squash(d.test), d.n_classes),
                    pretrain=pretrain, pretrain_updates=40)
    monkeypatch.setattr(config, "CPU_THREADS_PROBE_EVERY_S", 0)
    still = fastff.train("9x2", **opts)
    switches = []
    real = ThreadChoice._try
    monkeypatch.setattr(ThreadChoice, "_try", lambda self, parallel, now: (
        switches.append(parallel), real(self, parallel, now)))
    monkeypatch.setattr(config, "CPU_THREADS_PROBE_EVERY_S", 1e-9)
    monkeypatch.setattr(config, "CPU_THREADS_FIRST_PROBE_S", 0.0)
    monkeypatch.setattr(config, "CPU_THREADS_PROBE_STEPS", 2)
    import numba
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    probed = fastff.train("9x2", **opts)
    # a probe every 5 ticks: 60 steps give 12, pre-training (2 layers x 40 updates) 16 more
    assert switches.count(False) >= (25 if pretrain else 10)
    if pretrain:
        assert len(probed.pretrain) == 20 and [dict(r, seconds=0) for r in probed.pretrain] == [
            dict(r, seconds=0) for r in still.pretrain]
    np.testing.assert_equal([dict(r, seconds=0, monitor_seconds=0) for r in still.history],
                            [dict(r, seconds=0, monitor_seconds=0) for r in probed.history])
    for (W1, b1), (W2, b2) in zip(still.model.params, probed.model.params):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)


@pytest.mark.parametrize("steps, before", [(21, True), (26, True), (68, False), (73, False)])
def test_a_probe_under_way_when_training_follows_pre_training_is_dropped(monkeypatch, steps,
                                                                         before):
    # its steps were pre-training updates: the passes chosen before it come back (parallel
    # when quiet, serial once a probe found them faster), and a new probe times training steps
    serial_s, parallel_s = (0.004, 0.0025) if before else (0.004, 0.009)
    choice, net, used = _drive(monkeypatch, serial_s, parallel_s, steps=steps)
    assert choice.trying is not None  # a probe under way: its serial or its parallel half
    choice.restart()
    assert choice.trying is None and net.plan.parallel == before
    assert choice.next_probe == pytest.approx(choice.clock() + 0.05)
