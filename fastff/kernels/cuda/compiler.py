"""Compiling the CUDA sources: the translation unit, the template instances, the options (tile
sizes from :mod:`fastff.config`, checked), the kernels' parameter lists, and the compile report
(registers, shared memory, spills) of the compile gate. Needs no GPU; CuPy's NVRTC only for
:func:`compile_report`.
"""
import re
from pathlib import Path

import numpy as np

from ... import activations, config
from ...checks import flag
from ...errors import DeviceError, InputError
from .geometry import step_chunks

SOURCE_DIR = Path(__file__).parent
SOURCES = ("common.cuh", "dense_forward.cu", "dense_backward_sgd.cu",
           "dense_backward_second_order.cu", "softmax_loss.cu", "train_step.cu", "shapeset.cu")
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
SHAPESET_THREADS = 32  # shapeset.cu: a block per image, a thread per row and column
STATIC_SHARED_BYTES = 48 * 1024  # a block's static shared memory, on every GPU since sm_20


def source():
    """The one translation unit NVRTC compiles: common.cuh, then every kernel file."""
    return "\n".join((SOURCE_DIR / name).read_text() for name in SOURCES)


def step_rows(batch):
    """The rows the persistent step (train_step.cu's ``PB``) is compiled for at ``batch``: the
    batch rounded up to a multiple of 4 (a forward thread's row groups), at most
    config.CUDA_STEP_MAX_BATCH. Fewer rows, fewer padded FMAs; the bits do not change."""
    most = config.CUDA_STEP_MAX_BATCH
    return min(most, -(-int(batch) // 4) * 4)


def step_name(ctype, activation, batch):
    """The name expression of the persistent step's instance for ``batch``."""
    return f"train_steps<{ctype}, {activations.CODES[activation]}, {step_rows(batch)}>"


def name_expressions(every_rows=False):
    """Every kernel template instance the backend launches: the persistent step's for its most
    rows (config.CUDA_STEP_MAX_BATCH), or with ``every_rows`` for every row count
    :func:`step_rows` gives. A GPU compiles the other row counts when a batch first asks for
    them (:meth:`fastff.kernels.cuda.runtimes.CuPyRuntime.function`)."""
    rows = sorted({step_rows(b) for b in range(1, config.CUDA_STEP_MAX_BATCH + 1)}) \
        if every_rows else [config.CUDA_STEP_MAX_BATCH]
    out = []
    for t in CTYPES.values():
        out += [f"grad_x_fused<{t}>", f"dense_backward_update<{t}>", f"two_updates<{t}>",
                f"softmax_nll<{t}>", f"softmax_quadratic<{t}>", f"square_into<{t}>",
                f"second_order_update<{t}>"]
        for code in sorted(set(activations.CODES.values())):
            out += [f"dense_forward_fused<{t}, {code}>", f"dense_backward_delta<{t}, {code}>",
                    f"second_order_columns<{t}, {code}>"]
        out += [f"train_steps<{t}, {activations.CODES[a]}, {r}>"
                for a in activations.HIDDEN_ACTIVATIONS for r in rows]
    # float32 only: in float64 the two jobs' registers spill at 2 blocks an SM, and the
    # forward with the cost passes 48 KB of shared memory
    return out + ["grad_x_and_update<float>", "dense_forward_and_cost<float>", "shapeset_render",
                  "barrier_rounds"]


def defines():
    """Tile sizes from :mod:`fastff.config`, as the -D options of a compile (checked: the
    kernels index their tiles with them unchecked)."""
    tm, tn, tk = config.CUDA_GEMM_TILE
    strip, lanes = config.CUDA_STEP_STRIP, config.CUDA_STEP_LANES
    for name, value in (("CUDA_GEMM_TILE rows", tm), ("CUDA_GEMM_TILE columns", tn),
                        ("CUDA_UPDATE_TILE", config.CUDA_UPDATE_TILE),
                        ("CUDA_DELTA_ROWS", config.CUDA_DELTA_ROWS),
                        ("CUDA_STEP_STRIP", strip), ("CUDA_STEP_LANES", lanes)):
        if not isinstance(value, int) or value < 2 or value & (value - 1):
            raise InputError(f"config.{name} must be a power of two >= 2, got {value!r}")
    if min(tm, tn, config.CUDA_UPDATE_TILE) < 4:
        raise InputError("config.CUDA_GEMM_TILE rows and columns and CUDA_UPDATE_TILE must be >= 4")
    if strip * lanes > 1024:
        raise InputError(f"config.CUDA_STEP_STRIP x CUDA_STEP_LANES = {strip * lanes} threads "
                         "a block; CUDA allows at most 1024")
    polls = config.CUDA_BARRIER_POLLS
    if isinstance(polls, bool) or not isinstance(polls, int) or polls < 0:
        raise InputError(f"config.CUDA_BARRIER_POLLS must be an integer >= 0 (0: no bound), "
                         f"got {polls!r}")
    for name in ("CUDA_STEP_MAX_BATCH", "CUDA_STEP_MAX_CLASSES", "CUDA_MAX_BINS",
                 "CUDA_EPILOGUE_ROWS"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise InputError(f"config.{name} must be a positive integer, got {value!r}")
    # train_step.cu's static shared memory in double: the staged inputs (and red), xrows, dz,
    # row_cost, sums, local_hist
    pb, classes = config.CUDA_STEP_MAX_BATCH, config.CUDA_STEP_MAX_CLASSES
    kc, jc, stage = step_chunks(strip, lanes, pb)
    shared = (8 * (stage + strip * pb + pb * classes + pb + strip * lanes)
              + 4 * config.CUDA_MAX_BINS)
    if shared > STATIC_SHARED_BYTES:
        raise InputError(f"the persistent step would need {shared} bytes of shared memory a block "
                         f"(config.CUDA_STEP_MAX_BATCH, CUDA_STEP_MAX_CLASSES, CUDA_MAX_BINS, "
                         f"CUDA_STEP_STRIP x LANES); CUDA allows {STATIC_SHARED_BYTES} static")
    return [f"-DFASTFF_TM={tm}", f"-DFASTFF_TN={tn}", f"-DFASTFF_TK={tk}",
            f"-DFASTFF_UT={config.CUDA_UPDATE_TILE}", f"-DFASTFF_MAX_BINS={config.CUDA_MAX_BINS}",
            f"-DFASTFF_THREADS={config.CUDA_THREADS}", f"-DFASTFF_DR={config.CUDA_DELTA_ROWS}",
            f"-DFASTFF_MIN_BLOCKS={config.CUDA_BLOCKS_PER_SM}", f"-DFASTFF_ST={strip}",
            f"-DFASTFF_SL={lanes}", f"-DFASTFF_PB={config.CUDA_STEP_MAX_BATCH}",
            f"-DFASTFF_MAXC={config.CUDA_STEP_MAX_CLASSES}", f"-DFASTFF_KC={kc}",
            f"-DFASTFF_JC={jc}", f"-DFASTFF_STAGE={stage}",
            f"-DFASTFF_ER={config.CUDA_EPILOGUE_ROWS}",
            f"-DFASTFF_BARRIER_POLLS={polls}ULL",
            f"-DFASTFF_PROFILE={int(flag('config.CUDA_PROFILE_STEP', config.CUDA_PROFILE_STEP))}"]


# the config settings the compile reads: its options are made once for each set of their values
COMPILE_SETTINGS = ("CUDA_GEMM_TILE", "CUDA_UPDATE_TILE", "CUDA_DELTA_ROWS", "CUDA_STEP_STRIP",
                    "CUDA_STEP_LANES", "CUDA_STEP_MAX_BATCH", "CUDA_STEP_MAX_CLASSES",
                    "CUDA_MAX_BINS", "CUDA_THREADS", "CUDA_BLOCKS_PER_SM", "CUDA_BARRIER_POLLS",
                    "CUDA_PROFILE_STEP", "CUDA_EPILOGUE_ROWS")
_OPTIONS = {}


def compile_options():
    """NVRTC options of the backend (the compile gate adds the architecture and ptxas flags),
    checked and made once for each set of the config values they rest on (a launch asks for
    them: a CUDA setting changed after the first launch compiles the sources again)."""
    key = tuple(getattr(config, name) for name in COMPILE_SETTINGS)
    options = _OPTIONS.get(key)
    if options is None:
        options = _OPTIONS[key] = ("-std=c++17", *defines())
    return options


def parameters():
    """Every kernel's parameters as the ``.cu`` sources declare them: {kernel name (without
    template arguments): ((C type, name), ...)}. The launchers build their arguments by these
    names (:func:`fastff.kernels.cuda.runtimes.Runtime.launch_named`)."""
    if not _PARAMETERS:
        text = re.sub(r"//[^\n]*", "", source())
        for m in re.finditer(r"__global__\s+void\s+", text):
            i = m.end()
            if text.startswith("__launch_bounds__", i):  # skip its balanced parentheses
                depth, i = 0, text.index("(", i)
                while True:
                    depth += {"(": 1, ")": -1}.get(text[i], 0)
                    i += 1
                    if depth == 0:
                        break
            head = re.match(r"\s*(\w+)\s*\(([^)]*)\)", text[i:])
            params = []
            for piece in head.group(2).split(","):
                words = re.findall(r"[\w]+|\*", piece.replace("__restrict__", ""))
                params.append((" ".join(w for w in words[:-1] if w != "const"), words[-1]))
            _PARAMETERS[head.group(1)] = tuple(params)
    return _PARAMETERS


_PARAMETERS = {}



# ptxas flags of the compile gate: resource usage in the log, and spills or local memory fail
PTXAS_GATE = ("-Xptxas", "-v", "-Xptxas", "-warn-spills", "-Xptxas", "-warn-lmem-usage",
              "-Xptxas", "--warning-as-error")


def compile_report(arch, src=None, names=None):
    """Compile every kernel instance with NVRTC for ``arch`` (``sm_80``, ``sm_90``), ptxas
    warnings as errors, and return one dict per instance: registers, shared memory, stack,
    spills and the threads per block the launches use. Needs CuPy's NVRTC, not a GPU.

    Raises DeviceError with the compiler's log when the compile fails (a spill, local memory).
    ``src`` replaces :func:`source` (the tests break a kernel on purpose with it); ``names``
    the instances compiled (default :func:`name_expressions`).
    """
    try:
        from cupy.cuda import nvrtc
    except ImportError as exc:
        raise DeviceError(f"the compile check needs CuPy's NVRTC: pip install 'fastff[cuda]' ({exc})") from None
    names = name_expressions() if names is None else list(names)
    prog = nvrtc.createProgram(source() if src is None else src, "fastff_kernels.cu", [], [])
    try:
        for n in names:
            nvrtc.addNameExpression(prog, n)
        try:
            nvrtc.compileProgram(prog, [f"--gpu-architecture={arch}", *compile_options(), *PTXAS_GATE])
        except Exception as exc:
            log = nvrtc.getProgramLog(prog).replace("\x00", "")  # the log ends in a NUL
            raise DeviceError(f"NVRTC failed for {arch}: {exc}\n{log}") from None
        log = nvrtc.getProgramLog(prog).replace("\x00", "")
        lowered = {nvrtc.getLoweredName(prog, n): n for n in names}
    finally:
        nvrtc.destroyProgram(prog)
    rows, current = {}, None
    for line in log.splitlines():
        m = re.search(r"(?:Compiling entry function|Function properties for) '?([\w$]+)'?", line)
        if m:  # a kernel not asked for (the plain __global__ ones always compile): skipped
            current = rows.setdefault(lowered[m.group(1)], dict(kernel=lowered[m.group(1)])) \
                if m.group(1) in lowered else None
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                           spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current["smem"] = int(s.group(1)) if s else 0
    for name, row in rows.items():
        row["threads"], row["blocks_per_sm"] = threads_per_block(name), blocks_per_sm(name)
    return [rows[n] for n in names if n in rows]


def threads_per_block(name):
    """Threads per block the launches of kernel ``name`` use (its __launch_bounds__)."""
    tm, tn, _ = config.CUDA_GEMM_TILE
    ut = config.CUDA_UPDATE_TILE
    if name.startswith(("dense_forward_fused", "grad_x_fused", "grad_x_and_update")):
        return (tn // 4) * (tm // 4)
    if name.startswith(("dense_backward_update", "two_updates", "second_order_update")):
        return (ut // 4) ** 2
    if name.startswith(("train_steps", "barrier_rounds")):
        return config.CUDA_STEP_STRIP * config.CUDA_STEP_LANES
    if name == "shapeset_render":
        return SHAPESET_THREADS
    return int(config.CUDA_THREADS)


def blocks_per_sm(name):
    """Blocks an SM must hold at once by kernel ``name``'s __launch_bounds__ (its second
    argument, which caps the registers ptxas gives a thread)."""
    if name.startswith(("dense_backward_update", "two_updates", "second_order_update",
                        "shapeset_render")):
        return 1
    if name.startswith("train_steps<double"):  # its registers: train_step.cu's launch bounds
        return 1
    return int(config.CUDA_BLOCKS_PER_SM)
