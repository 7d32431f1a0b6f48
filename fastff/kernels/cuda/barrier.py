"""The persistent step's grid barrier (``fastff::grid_sync``, common.cuh) from the host: its
words, the report of its debugging bound (``config.CUDA_BARRIER_POLLS``), and the barrier alone
in a launch of its own (``barrier_rounds``), which benchmarks/gpu_check.py times."""
import numpy as np

from ... import config
from ...arrays import to_host
from ...errors import DeviceError
from .runtimes import runtime


def threads():
    """Threads of a block of the persistent kernels (train_steps, barrier_rounds)."""
    return config.CUDA_STEP_STRIP * config.CUDA_STEP_LANES


BARRIER_WORDS = 6  # train_step.cu's barrier: the grid barrier's word, one unused, its debugging report


def arrivals(moved, grid):
    """Blocks that had arrived at a grid barrier whose word had moved by ``moved`` since the
    barrier began: block 0 adds 2^31 - (grid - 1), every other block 1 (common.cuh,
    ``grid_sync``)."""
    first = 2**31 - (grid - 1)
    # at most the grid: where the barrier completed between the last poll and the report,
    # blocks may already be arriving at the next one
    return min(grid, moved if moved < first else moved - first + 1)


def check_barrier(rt, barrier, grid, layers=None, steps=1):
    """After a launch with the debugging bound on (config.CUDA_BARRIER_POLLS), raise a
    DeviceError where a block gave up at a grid barrier, naming it, the phase (the step and the
    layer, for a persistent step of ``layers`` layers) and the blocks that had arrived; the
    barrier's words are zeroed for the next launch."""
    report = to_host(barrier)
    if not report[5]:
        return
    block, phase, arrived = int(report[2]) - 1, int(report[3]) - 1, arrivals(int(report[4]), grid)
    barrier.fill(0)
    where = f"phase {phase}"
    if layers:
        step, k = divmod(phase, 2 * layers)
        where = (f"step {step + 1} of {steps}, after the "
                 + (f"forward of layer {k + 1}" if k < layers
                    else f"backward of layer {2 * layers - k}") + f" of {layers}")
    raise DeviceError(f"a grid barrier gave up after config.CUDA_BARRIER_POLLS = "
                      f"{config.CUDA_BARRIER_POLLS} polls: block {block} waited at {where}, "
                      f"with {arrived} of {grid} blocks arrived (a block that never arrives, or "
                      "a grid larger than fits at once)")


def barrier_rounds(rounds, grid=None, rt=None):
    """``rounds`` grid barriers in one cooperative launch of ``grid`` blocks (default: as many
    as fit at once, the persistent step's grid on a large net): the barrier's own cost, for
    benchmarks/gpu_check.py. Returns the grid."""
    rt = runtime() if rt is None else rt
    store = rt.__dict__.setdefault("_barrier_rounds", {})
    barrier = store.get(rt.stream())
    if barrier is None:
        barrier = store[rt.stream()] = rt.zeros(BARRIER_WORDS, np.uint32)
    grid = rt.resident("barrier_rounds", threads()) if grid is None else grid
    rt.launch_named("barrier_rounds", (grid,), (threads(),), cooperative=True, barrier=barrier,
                    rounds=np.int32(rounds))
    if config.CUDA_BARRIER_POLLS:
        check_barrier(rt, barrier, grid)
    return grid
