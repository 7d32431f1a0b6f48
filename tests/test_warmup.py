"""The serial twins of the small-batch passes, and the parallel ones compiled in another process
while a run steps with the serial ones (fastff/training/warmup.py)."""
import sys
import subprocess

import numpy as np
import pytest

import fastff
from fastff.training import warmup


@pytest.mark.parametrize("optimizer", ["sgd", "diag_hessian", "grad_variance"])
@pytest.mark.parametrize("batch", [7, 10])
def test_serial_twins_step_bit_for_bit_as_the_parallel_passes(rng, optimizer, batch):
    x = rng.standard_normal((batch, 37)).astype(np.float32)
    y = rng.integers(0, 5, batch)
    nets = []
    for parallel in (True, False):
        net = fastff.MLP([37, 29, 31, 5], activation="tanh", seed=3)
        net._plan.set_parallel(parallel)
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
    assert not net._plan.parallel  # the warm-up and the first steps: serial twins
    pending.start(compiled=True)  # as after a warm-up that compiled: a cold cache
    assert pending.pending and not net._plan.parallel
    pending.process.wait(timeout=600)
    pending.poll()
    assert net._plan.parallel and not pending.pending
    assert pending.key in warmup._COMPILED
    again = fastff.MLP([8, 4, 4], activation="sigmoid", seed=2)  # other widths, same code
    assert not warmup.ParallelCompile(again, key_batch, "sgd").pending  # known: parallel at once
    assert again._plan.parallel


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
    assert not net._plan.parallel
    pending.close()
    assert net._plan.parallel  # after the run, as any MLP


def test_large_batches_and_other_backends_need_no_compiling_process():
    assert not warmup.ParallelCompile(fastff.MLP([6, 7, 2]), 64, "sgd").pending
    ref = fastff.MLP([6, 7, 2], kernels="reference")
    assert not warmup.ParallelCompile(ref, 10, "sgd").pending


def test_a_warm_cache_loads_the_parallel_passes_at_once():
    net = fastff.MLP([5, 6, 2], activation="tanh", dtype="float64")
    pending = warmup.ParallelCompile(net, 4, "sgd")
    warmup.warm_up(net, 4)
    pending.start(compiled=False)  # the serial warm-up found everything in the cache
    assert not pending.pending and net._plan.parallel and pending.key in warmup._COMPILED


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
    assert process.poll() is not None and not pending.pending and pending.model._plan.parallel
