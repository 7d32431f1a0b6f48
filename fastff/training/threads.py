"""On a busy machine, the serial twins of the parallel passes when they are faster.

The small-batch passes run on every core, and their threads meet at a barrier several times a
layer. When other processes hold the cores, a thread that loses its core holds the others at
the barrier until it gets one back. Measured on a 2-core AMD EPYC Zen 4 with two busy
processes beside it, the README's run took 192-262 s with two threads and 113 s with one
(42-45 s with the machine to itself; docs/speed.md, "A busy machine"). The serial twins give
the same numbers bit for bit (fastff/kernels/cpu/jit.py, ``parallel_and_serial``), so a run
may use whichever is faster at the moment: :class:`ThreadChoice` times a few steps of each
every so often and keeps the faster.
"""
import statistics
from time import perf_counter as clock

import numba

from .. import config as fastff_config


class ThreadChoice:
    """Chooses, while a run trains, between the parallel passes of ``model`` and their serial
    twins.

    Call :meth:`tick` after every step. Every ``config.CPU_THREADS_PROBE_EVERY_S`` seconds
    (the first time after ``config.CPU_THREADS_FIRST_PROBE_S``) it times
    ``config.CPU_THREADS_PROBE_STEPS`` steps with the serial twins, then as many with the
    parallel passes, and keeps the one whose median step was shorter. It waits while the
    parallel passes compile in another process (``compiling``, a
    :class:`~fastff.training.warmup.ParallelCompile`, until it is ``ready``: for good if they
    failed to compile) and does nothing where there is no choice: one thread, a plan without
    serial twins, or a batch that takes the large-batch path.
    """

    def __init__(self, model, batch_size, compiling=None, clock=clock):
        plan = model.plan
        self.plan, self.compiling, self.clock = plan, compiling, clock
        self.enabled = (plan.serial_twins and numba.get_num_threads() > 1
                        and batch_size <= fastff_config.CPU_SMALL_BATCH_MAX
                        and fastff_config.CPU_THREADS_PROBE_EVERY_S > 0)
        self.next_probe = clock() + fastff_config.CPU_THREADS_FIRST_PROBE_S
        self.trying, self.times, self.last, self.before = None, {}, None, None
        self.probes, self.serial_chosen = 0, 0  # what it chose, for the curious (and the tests)

    def tick(self):
        """After a step: start, continue or end a probe when one is due."""
        if not self.enabled:
            return
        now = self.clock()
        if self.trying is None:
            if now >= self.next_probe and (self.compiling is None or self.compiling.ready):
                self._try(False, now)
            return
        self.times[self.trying].append(now - self.last)
        self.last = now
        if len(self.times[self.trying]) < fastff_config.CPU_THREADS_PROBE_STEPS:
            return
        if not self.trying:
            self._try(True, now)
            return
        serial = statistics.median(self.times[False])
        parallel = statistics.median(self.times[True])
        self.plan.set_parallel(parallel <= serial)
        self.probes += 1
        self.serial_chosen += parallel > serial
        self.trying, self.next_probe = None, now + fastff_config.CPU_THREADS_PROBE_EVERY_S

    def restart(self):
        """Another kind of step follows (training after pre-training): a probe under way is
        dropped, the passes it found go back, and a new probe comes soon."""
        if self.trying is not None:
            self.plan.set_parallel(self.before)
            self.trying = None
        self.next_probe = self.clock() + fastff_config.CPU_THREADS_FIRST_PROBE_S

    def _try(self, parallel, now):
        if not parallel:
            self.before = self.plan.parallel
        self.plan.set_parallel(parallel)
        self.trying, self.last = parallel, now
        self.times[parallel] = []
