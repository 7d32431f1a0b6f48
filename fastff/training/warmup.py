"""Compiling the kernels before a run's clock starts, and the parallel ones beside it.

A fresh machine compiles fastff's Numba kernels once (then Numba caches them on disk). The small-
batch passes come in two twins that give the same numbers bit for bit (fastff/kernels/cpu/jit.py,
``parallel_and_serial``): the serial twins compile in about half the time, because the parallel
loops are what Numba compiles slowest (benchmarks/NOTES.md, "Compile time, again"). So
:func:`fastff.train` compiles the serial twins before the first step (:func:`warm_up`) while a
separate process compiles the parallel ones into the on-disk cache (:class:`ParallelCompile`);
the run steps serially until that process is done, then loads the parallel kernels from the cache
and switches. A process, not a thread: Numba's compiler holds the GIL for long stretches, which
would stall the training loop.
"""
import json
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from numba.core import event as numba_event

from .. import config as fastff_config

# What this process has compiled in parallel already (ParallelCompile.key): a second run of the
# same kind does not start another compiling process.
_COMPILED = set()


class CompileNotice(numba_event.Listener):
    """Says once, on stderr, that kernels are compiling (Numba runs compiler passes only for
    code that is not in its on-disk cache), and how long it took."""

    def __init__(self, enabled):
        self.enabled, self.started, self.compiled = enabled, None, False

    def on_start(self, ev):
        self.compiled = True
        if self.enabled and self.started is None:
            self.started = time.perf_counter()
            print("fastff: compiling kernels for this machine (once; cached on disk "
                  "afterwards)...", file=sys.stderr, flush=True)

    def on_end(self, ev):
        pass

    def done(self):
        """Say how long it took, once (nothing if nothing compiled)."""
        if self.started is not None:
            print(f"fastff: kernels ready ({time.perf_counter() - self.started:.0f} s)",
                  file=sys.stderr, flush=True)
            self.started = None


def warm_up(model, batch_size, optimizer="sgd"):
    """A step and a large-batch forward (evaluation, monitor) on a scratch copy of ``model``,
    with its plan's choice of parallel or serial passes, so that compiling is done before the
    clock starts."""
    scratch, xp = model.copy(), model.backend.xp
    scratch.plan.set_parallel(model.plan.parallel)
    x = xp.zeros((batch_size, model.sizes[0]), model.dtype)
    rates = scratch.new_rates(optimizer) if optimizer != "sgd" else None
    scratch.step_unchecked(x, xp.zeros(batch_size, np.int64), 1e-3, scratch.new_stats(), rates)
    big = xp.zeros((fastff_config.CPU_SMALL_BATCH_MAX + 1, model.sizes[0]), model.dtype)
    scratch.forward_all(big, scratch.new_stats())


class ParallelCompile:
    """The parallel small-batch passes of ``model``, compiled by another process while ``model``
    steps with their serial twins. Make it before the serial warm-up (it puts the model on the
    serial twins), :meth:`launch` before it (the other process compiles meanwhile),
    :meth:`start` after it, then :meth:`poll` between steps: it switches the model to the
    parallel passes once they are in the on-disk cache."""

    def __init__(self, model, batch_size, optimizer):
        self.model, self.batch_size, self.optimizer = model, batch_size, optimizer
        # what the compiled code depends on: argument types (the dtype, the batch's tile shapes,
        # the optimizer's kernels), not the layer widths or the activation (a runtime code)
        self.key = (model.dtype.name, batch_size, optimizer, fastff_config.CPU_FORWARD_W_ROWS,
                    fastff_config.CPU_FORWARD_W_VECS, fastff_config.CPU_BACKWARD_W_ROWS)
        # ready: the parallel passes can run without compiling on the clock
        self.process, self.waiting, self.ready = None, False, True
        plan = model.plan
        if not plan.serial_twins or batch_size > fastff_config.CPU_SMALL_BATCH_MAX:
            return  # no parallel twins here: another backend, or the BLAS path
        if self.key in _COMPILED:
            plan.set_parallel(True)
            return
        self.ready = False
        plan.set_parallel(False)
        self.waiting = True

    def launch(self):
        """Before the serial warm-up: start the process that compiles the parallel passes, so
        that the two compile at once, one core each (on a warm cache the process only loads
        them and is stopped by :meth:`start`; on 2 cores the serial warm-up leaves the other
        one idle anyway)."""
        if not self.waiting or self.process is not None:
            return
        model = self.model
        spec = dict(sizes=list(model.sizes), activation=model.activation,
                    dtype=model.dtype.name, batch_size=self.batch_size, loss=model.loss,
                    optimizer=self.optimizer)
        self.errors = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block it
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from fastff.training.warmup import _compile_main; "
             "_compile_main(sys.argv[1])", json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.errors)

    def start(self, compiled):
        """After the serial warm-up: when it ``compiled`` anything the cache is cold, and the
        run steps with the serial twins until the other process is done (:meth:`poll`); when
        everything came from the cache, the parallel passes most likely do too: they load
        here at once and the other process stops."""
        if not self.waiting:
            return
        if compiled:
            self.launch()  # (already running when launch() came first)
            self.waiting = False
            return
        self.waiting = False
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.errors.close()
            self.process = None
        self.model.plan.set_parallel(True)
        warm_up(self.model, self.batch_size, self.optimizer)
        _COMPILED.add(self.key)
        self.ready = True

    @property
    def pending(self):
        return self.process is not None

    def poll(self):
        """Switch to the parallel passes if the compiling process has finished."""
        if self.process is None or self.process.poll() is None:
            return
        process, self.process = self.process, None
        self.errors.seek(0)
        err = self.errors.read().decode(errors="replace")
        self.errors.close()
        if process.returncode != 0:
            warnings.warn("fastff: the parallel kernels did not compile in the background "
                          f"(exit {process.returncode}: {err.strip()[-500:]}); the run goes on "
                          "with their serial twins: the same numbers, more slowly",
                          RuntimeWarning, stacklevel=2)
            return
        self.model.plan.set_parallel(True)
        warm_up(self.model, self.batch_size, self.optimizer)  # from the cache: a fraction of a second
        _COMPILED.add(self.key)
        self.ready = True

    def close(self):
        """At the end of the run: leave the compiling process to finish on its own (what it
        compiles stays cached) and give the model its parallel passes back, as any MLP has."""
        if self.process is not None:
            self.errors.close()
            self.process = None
        self.model.plan.set_parallel(True)


def _compile_main(spec):
    """The compiling process: the parallel passes of the model ``spec`` describes (JSON)."""
    from ..model import MLP
    spec = json.loads(spec)
    model = MLP(spec["sizes"], activation=spec["activation"], dtype=spec["dtype"],
                loss=spec["loss"])
    warm_up(model, spec["batch_size"], spec["optimizer"])
