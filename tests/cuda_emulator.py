"""The CUDA sources built for the host (tests/cuda_host/emu.h) and run through fastff's own
CUDA orchestration (fastff.kernels.cuda) by swapping its runtime: test code only.

``build(tmp_dir)`` compiles the kernels of ``fastff.kernels.cuda.source()``, with the tile
sizes of ``fastff.config`` at the time of the call, into a shared library; ``EmuRuntime(lib)``
launches them with NumPy arrays, as ``CuPyRuntime`` launches them on a GPU with CuPy arrays.
"""
import ctypes
import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np

from fastff.kernels import cuda

HOST = Path(__file__).resolve().with_name("cuda_host")
_CTYPES = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
           np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


def translation_unit(src=None, main=""):
    """emu.h, the kernel sources, a table from name expression to kernel, and the launcher."""
    table = ",\n".join(f'  {{"{n}", [](void** a) {{ call_kernel(&{n}, a); }}}}'
                       for n in cuda.name_expressions())
    return f"""#include "emu.h"
#include <map>
#include <string>
{cuda.source() if src is None else src}
static const std::map<std::string, void (*)(void**)> kTable = {{
{table}
}};
extern "C" int fastff_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz,
                                 unsigned bx, unsigned by, unsigned bz, void** args) {{
  auto it = kTable.find(name);
  if (it == kTable.end()) return -1;
  auto fn = it->second;
  fastff_emu::run({{gx, gy, gz}}, {{bx, by, bz}}, [&] {{ fn(args); }});
  return 0;
}}
{main}
"""


def compiler():
    return shutil.which("g++")


def build(out_dir, src=None, main="", flags=("-O1", "-shared", "-fPIC"), suffix=".so"):
    """Compile the kernels for the host; returns the path of the library (or program)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    code = translation_unit(src, main)
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


class EmuRuntime(cuda.Runtime):
    """fastff.kernels.cuda's runtime on the host: NumPy arrays, kernels run by emu.h."""

    xp = np

    def __init__(self, library, sms=2):
        self.lib = ctypes.CDLL(str(library))
        self.lib.fastff_emu_launch.restype = ctypes.c_int
        self.sms = sms
        self.launches = []

    def launch(self, name, grid, block, args):
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        holders = []
        ptrs = (ctypes.c_void_p * len(args))()
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous, f"argument {i} of {name} is not contiguous"
                h = ctypes.c_void_p(a.ctypes.data)
            else:
                h = _CTYPES[np.asarray(a).dtype](np.asarray(a).item())
            holders.append(h)
            ptrs[i] = ctypes.cast(ctypes.pointer(h), ctypes.c_void_p)
        self.launches.append((name, grid, block))
        rc = self.lib.fastff_emu_launch(name.encode(), *grid, *block, ptrs)
        assert rc == 0, f"the host build has no kernel {name!r}"
