"""The CUDA sources built for the host (tests/cuda_host/emu.h) and run through fastff's own
CUDA orchestration (fastff.kernels.cuda) by swapping its runtime: test code only.

``build(tmp_dir)`` compiles the kernels of ``fastff.kernels.cuda.source()``, with the tile
sizes of ``fastff.config`` at the time of the call, into a shared library; ``EmuRuntime(lib)``
launches them with NumPy arrays, as ``CuPyRuntime`` launches them on a GPU with CuPy arrays.
"""
import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np

from fastff import config
from fastff.kernels import cuda

HOST = Path(__file__).resolve().with_name("cuda_host")
# Tiny tiles for the emulated cases: 2 x 2 threads per GEMM block, 8 threads per column kernel
# and per block of the persistent step, so that small shapes span many blocks, several K
# splits and partial tiles on every edge.
SMALL = dict(CUDA_GEMM_TILE=(4, 8, 4), CUDA_UPDATE_TILE=8, CUDA_THREADS=8, CUDA_DELTA_ROWS=4,
             CUDA_BLOCKS_PER_SM=2,
             CUDA_SPLIT_BLOCKS=32, CUDA_STEP_STRIP=2, CUDA_STEP_LANES=4)
# The smallest tiles where a float32 model's backward pass runs a dC/dx and an update in one
# launch (square, as wide as the update's: fastff.kernels.cuda.fused_pass.pairs_jobs).
SQUARE = dict(SMALL, CUDA_GEMM_TILE=(8, 8, 4), CUDA_UPDATE_TILE=8)


def translation_unit(src=None, main="", every_rows=False):
    """emu.h, the kernel sources, a table from name expression to kernel, and the launcher;
    the persistent step's instances for every row count with ``every_rows``, else for the most
    rows only (EmuRuntime runs those for a smaller batch: the same bits, a quicker build)."""
    table = ",\n".join(f'  {{"{n}", [](void** a) {{ call_kernel(&{n}, a); }}}}'
                       for n in cuda.name_expressions(every_rows=every_rows))
    return f"""#include "emu.h"
#include <map>
#include <string>
{cuda.source() if src is None else src}
static const std::map<std::string, void (*)(void**)> kTable = {{
{table}
}};
extern "C" int fastff_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz,
                                 unsigned bx, unsigned by, unsigned bz, void** args,
                                 int cooperative) {{
  auto it = kTable.find(name);
  if (it == kTable.end()) return -1;
  auto fn = it->second;
  return fastff_emu::run({{gx, gy, gz}}, {{bx, by, bz}}, cooperative != 0, [&] {{ fn(args); }});
}}
extern "C" void fastff_emu_configure(int concurrent, unsigned max_resident,
                                     unsigned long long seed, unsigned wave) {{
  fastff_emu::g_settings = {{concurrent != 0, max_resident, seed, wave}};
}}
{main}
"""


def compiler():
    return shutil.which("g++")


def build(out_dir, src=None, main="", flags=("-O1", "-shared", "-fPIC"), suffix=".so",
          every_rows=False):
    """Compile the kernels for the host; returns the path of the library (or program).
    ``every_rows``: the persistent step for every row count (:func:`translation_unit`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    code = translation_unit(src, main, every_rows)
    args = ["-std=c++20", "-pthread", f"-I{HOST}", *cuda.defines(), *flags]
    key = hashlib.sha256((code + " ".join(args)).encode()).hexdigest()[:16]
    target = out_dir / f"fastff_emu_{key}{suffix}"
    if not target.exists():
        tu = out_dir / f"fastff_emu_{key}.cpp"
        tu.write_text(code)
        proc = subprocess.run([compiler(), *args, str(tu), "-o", str(target)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"host build of the CUDA sources failed:\n{proc.stderr[-4000:]}")
    return target


def host_mlp(sizes, activation, dtype, seed=4, loss="nll", tf32=False):
    """An MLP whose steps run through fastff's CUDA launch code (both paths) on whatever
    runtime is set, here the emulator: its arrays stay NumPy arrays."""
    import fastff
    from fastff.kernels import Backend
    from fastff.kernels.cuda.step import CUDAPlan
    net = fastff.MLP(sizes, activation=activation, dtype=dtype, seed=seed, loss=loss)
    net.backend = Backend("cuda-on-host", "cpu", "fastff.kernels.cuda", plan_class=CUDAPlan)
    net.tf32 = tf32  # MLP(tf32=True) asks for device='cuda'; this backend is the CUDA code
    net.plan = net.new_plan()
    return net


def cuda_mlp(rt, sizes, activation, dtype, loss="nll"):
    """An MLP whose steps run through the CUDA kernels on runtime ``rt``: on the GPU, or
    emulated on the host (:func:`host_mlp`)."""
    import fastff
    if rt.xp is not np:
        return fastff.MLP(sizes, activation=activation, dtype=dtype, seed=4, device="cuda",
                          loss=loss)
    return host_mlp(sizes, activation, dtype, loss=loss)


class EmuRuntime(cuda.Runtime):
    """fastff.kernels.cuda's runtime on the host: NumPy arrays, kernels run by emu.h.

    Parameters
    ----------
    library : path
        From :func:`build`.
    sms : int
        The SMs it pretends to have.
    concurrent : bool
        Run the blocks of every launch at once (in waves of ``wave``), each with its own
        shared memory; False runs them one after another. Cooperative launches always run
        at once.
    resident : int
        Blocks per SM a cooperative launch may have: a larger grid is refused, as on a GPU.
    seed : int
        Nonzero: blocks start in an order permuted by it.

    It records what a launch audit counts: ``launches`` (name, grid, block),
    ``allocations`` (every array the launch code asked for) and ``uploads`` (the shapes of the
    host arrays it copied to the device with ``upload``).
    """

    xp = np

    def __init__(self, library, sms=2, concurrent=False, resident=2, seed=0, wave=64):
        self.lib = ctypes.CDLL(str(library))
        self.lib.fastff_emu_launch.restype = ctypes.c_int
        self.sms, self.per_sm = sms, resident
        self.defines = tuple(cuda.defines())
        self.lib.fastff_emu_configure(ctypes.c_int(int(concurrent)), ctypes.c_uint(sms * resident),
                                      ctypes.c_ulonglong(seed), ctypes.c_uint(wave))
        self.launches, self.allocations, self.uploads = [], [], []

    def launch(self, name, grid, block, args, cooperative=False):
        if self.graph is not None:  # captured: recorded, not run
            self.graph.record(name, grid, block, args, cooperative)
            return
        self.launches.append((name, tuple(grid), tuple(block)))
        self._run(name, grid, block, args, cooperative)

    def run_graph(self, graph):
        """A graph counts as one launch; its kernels run in order."""
        self.launches.append(("graph", (len(graph.nodes), 1, 1), (1, 1, 1)))
        for name, grid, block, args, cooperative in graph.nodes:
            self._run(name, grid, block, args, cooperative)

    def _run(self, name, grid, block, args, cooperative):
        if tuple(cuda.defines()) != self.defines:
            raise RuntimeError("a CUDA setting of fastff.config changed since this host build; "
                               "build the sources again for it")
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous, f"argument {i} of {name} is not contiguous"
        params, values = cuda.runtimes.kernel_params(args, self.address)
        rc = self.lib.fastff_emu_launch(name.encode(), *grid, *block, params, int(cooperative))
        if rc == -1 and name.startswith("train_steps<"):  # a build of the most rows only
            most = f"{name.rsplit(',', 1)[0]}, {config.CUDA_STEP_MAX_BATCH}>"
            rc = self.lib.fastff_emu_launch(most.encode(), *grid, *block, params,
                                            int(cooperative))
        assert rc != -1, f"the host build has no kernel {name!r}"
        if rc == -2:
            raise RuntimeError(f"cooperative launch of {name} with {np.prod(grid)} blocks: more "
                               f"than the {self.sms * self.per_sm} that fit at once "
                               "(CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE on a GPU)")

    def resident(self, name, threads):
        return self.sms * self.per_sm

    # The emulated device's memory in bytes (None: unlimited). The device is this process's
    # heap, so what is free is that less what tracemalloc counts (it must be tracing).
    memory = None

    def free_bytes(self):
        if self.memory is None:
            return None
        return self.memory - tracemalloc.get_traced_memory()[0]

    def upload(self, out, host):
        self.uploads.append(np.shape(host))
        super().upload(out, host)

    def empty(self, shape, dtype):
        out = super().empty(shape, dtype)  # refused while a graph is captured
        self.allocations.append((tuple(np.atleast_1d(shape)), np.dtype(dtype)))
        return out


CHILD_PRELUDE = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
import cuda_emulator
from fastff import config
from fastff.kernels import cuda
for key, value in {tiles!r}.items():
    setattr(config, key, value)
cuda.set_runtime(cuda_emulator.EmuRuntime({lib!r}, sms={sms}, concurrent=True))
"""


def prelude(lib, sms, tiles=None):
    """CHILD_PRELUDE for library ``lib``, built with ``tiles`` (default SMALL)."""
    return CHILD_PRELUDE.format(tests=str(HOST.parent), lib=str(lib), sms=sms,
                                tiles=dict(SMALL if tiles is None else tiles))


def child_run(out_dir, src, script, tiles=None, env=None):
    """Build ``src`` with ``tiles`` (default SMALL) set in fastff.config and run ``script`` in a
    child process on it (concurrent blocks, 2 SMs): a detection of the emulator ends the child
    with its own status, which the caller checks."""
    import pytest
    with pytest.MonkeyPatch.context() as mp:
        for key, value in (SMALL if tiles is None else tiles).items():
            mp.setattr(config, key, value)
        lib = build(out_dir, src=src)
    return subprocess.run([sys.executable, "-c", prelude(lib, 2, tiles) + script],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))


@contextlib.contextmanager
def runtime_for(kind, tmp_path_factory, tiles=None, sms=16, seed=7):
    """The CUDA runtime of a test module, set as fastff's while the context is open: ``host``
    (the emulator, blocks one after another), ``host-concurrent`` (all blocks at once, started
    in an order permuted by ``seed``), built with ``tiles`` (default SMALL) set in
    fastff.config, or ``gpu`` (CuPy, config untouched)."""
    import pytest
    mp = pytest.MonkeyPatch()
    old = cuda.set_runtime(None)
    try:
        if kind.startswith("host"):
            if compiler() is None:
                pytest.skip("the host emulation of the CUDA kernels needs g++")
            for key, value in (SMALL if tiles is None else tiles).items():
                mp.setattr(config, key, value)
            runtime = EmuRuntime(build(tmp_path_factory.mktemp("emu")), sms=sms,
                                 concurrent=kind == "host-concurrent",
                                 seed=seed if kind == "host-concurrent" else 0)
        else:
            runtime = cuda.CuPyRuntime()
        cuda.set_runtime(runtime)
        yield runtime
    finally:
        cuda.set_runtime(old)
        mp.undo()


def tsan_run(out_dir, script, src=None, sms=16, env=None, tiles=None):
    """Run ``script`` in a child process on the sources (or ``src``) built with
    ThreadSanitizer, after a prelude that makes them the CUDA runtime (with ``tiles``, default
    SMALL, which the caller must have set in fastff.config for the build). A race ends the
    child with status 66 and the report on stderr."""
    lib = build(out_dir, src=src, flags=("-O1", "-g", "-shared", "-fPIC", "-fsanitize=thread"))
    runtime = subprocess.run(["g++", "-print-file-name=libtsan.so"], capture_output=True,
                             text=True).stdout.strip()
    code = prelude(lib, sms, tiles) + script
    env = dict(os.environ, LD_PRELOAD=runtime, **(env or {}),
               TSAN_OPTIONS="exitcode=66 halt_on_error=1 report_signal_unsafe=0")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=600)
