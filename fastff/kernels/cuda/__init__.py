"""CUDA kernels through CuPy, with the contracts of :mod:`fastff.kernels.reference`.

The CUDA C++ sources are in ``fastff/kernels/cuda/`` (``common.cuh``, then one file per op);
they are compiled once by NVRTC through a CuPy ``RawModule`` (cached on disk by CuPy), every
template instance named in :func:`name_expressions`. The call tree::

    dense_forward       -> dense_forward_fused<T, ACT>     split-K products (all SMs busy at batch
                                                           10); the last block of a tile sums
                                                           its splits, adds b, applies f and
                                                           counts the statistics
    dense_backward_sgd  -> dense_backward_delta<T, ACT>    delta, bias update, dC/ds sums
                        -> grad_x_fused<T>                 dC/dx with the old W (split over N)
                        -> dense_backward_update<T>        W -= lr x^T delta, dC/dW sums
    dense_backward_second_order                            per-parameter rates (rates.py)
                        -> second_order_columns<T, ACT>    delta, q, the bias's rate step
                        -> grad_x_fused<T>                 dC/dx; with square_into<T>, the
                                                           curvature passed down (diag_hessian)
                        -> second_order_update<T>          W's rate step, dC/dW sums
    softmax_nll         -> softmax_nll<T>                  loss stays on the device
    softmax_quadratic   -> softmax_quadratic<T>            the same, for the quadratic cost
    shapeset.render     -> shapeset_render                 Shapeset-3x2's counter stream, the
                                                           bits of fastff.data.shapeset_counter

Every sum runs in a fixed order and counters use integer atomics, so a launch gives the same
bits every time. The launch geometry is plain Python (:func:`gemm_geometry`), shared with the
host emulator of the tests (``tests/cuda_host``), which runs these very sources and this very
orchestration on the CPU. ``import fastff.kernels.cuda`` needs no CuPy: the runtime is created
on the first kernel call, and says what is missing when it cannot be.
"""
import ctypes
import threading
from pathlib import Path

import numpy as np

from ... import activations, config
from ...arrays import on_device
from ...checks import flag
from ...errors import DeviceError, InputError
from ..contracts import backward_args, forward_args, second_order_args, softmax_args

SOURCE_DIR = Path(__file__).parent
SOURCES = ("common.cuh", "dense_forward.cu", "dense_backward_sgd.cu",
           "dense_backward_second_order.cu", "softmax_loss.cu", "train_step.cu", "shapeset.cu")
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
# What these kernels can do beyond the ops (fastff.kernels.backend.Backend.can)
CAPABILITIES = frozenset({"lockstep", "device_data", "graphs", "tf32"})
SHAPESET_THREADS = 32  # shapeset.cu: a block per image, a thread per row and column
STATIC_SHARED_BYTES = 48 * 1024  # a block's static shared memory, on every GPU since sm_20


def source():
    """The one translation unit NVRTC compiles: common.cuh, then every kernel file."""
    return "\n".join((SOURCE_DIR / name).read_text() for name in SOURCES)


def name_expressions():
    """Every kernel template instance the backend launches."""
    out = []
    for t in CTYPES.values():
        out += [f"grad_x_fused<{t}>", f"dense_backward_update<{t}>", f"softmax_nll<{t}>",
                f"softmax_quadratic<{t}>", f"square_into<{t}>", f"second_order_update<{t}>"]
        for code in sorted(set(activations.CODES.values())):
            out += [f"dense_forward_fused<{t}, {code}>", f"dense_backward_delta<{t}, {code}>",
                    f"second_order_columns<{t}, {code}>"]
        out += [f"train_steps<{t}, {activations.CODES[a]}>" for a in activations.HIDDEN_ACTIVATIONS]
    return out + ["shapeset_render"]


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
    for name in ("CUDA_STEP_MAX_BATCH", "CUDA_STEP_MAX_CLASSES", "CUDA_MAX_BINS"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise InputError(f"config.{name} must be a positive integer, got {value!r}")
    # train_step.cu's static shared memory in double: red, dz, row_cost, sums, local_hist
    pb, classes = config.CUDA_STEP_MAX_BATCH, config.CUDA_STEP_MAX_CLASSES
    shared = 8 * (pb * strip * lanes + pb * classes + pb + strip * lanes) + 4 * config.CUDA_MAX_BINS
    if shared > STATIC_SHARED_BYTES:
        raise InputError(f"the persistent step would need {shared} bytes of shared memory a block "
                         f"(config.CUDA_STEP_MAX_BATCH, CUDA_STEP_MAX_CLASSES, CUDA_MAX_BINS, "
                         f"CUDA_STEP_STRIP x LANES); CUDA allows {STATIC_SHARED_BYTES} static")
    return [f"-DFASTFF_TM={tm}", f"-DFASTFF_TN={tn}", f"-DFASTFF_TK={tk}",
            f"-DFASTFF_UT={config.CUDA_UPDATE_TILE}", f"-DFASTFF_MAX_BINS={config.CUDA_MAX_BINS}",
            f"-DFASTFF_THREADS={config.CUDA_THREADS}", f"-DFASTFF_DR={config.CUDA_DELTA_ROWS}",
            f"-DFASTFF_MIN_BLOCKS={config.CUDA_BLOCKS_PER_SM}", f"-DFASTFF_ST={strip}",
            f"-DFASTFF_SL={lanes}", f"-DFASTFF_PB={config.CUDA_STEP_MAX_BATCH}",
            f"-DFASTFF_MAXC={config.CUDA_STEP_MAX_CLASSES}"]


def compile_options():
    """NVRTC options of the backend (the compile gate adds the architecture and ptxas flags)."""
    return ("-std=c++17", *defines())


# -- launch geometry: plain Python, shared with the host emulator ------------------------------
def _ceil(a, b):
    return -(-a // b)


def gemm_geometry(M, R, Nc):
    """(grid, block, chunk, splits) of a split-R product of an (M, R) by (R, Nc) matrix.

    The reduction is cut into ``splits`` slices of ``chunk`` (a multiple of the tile depth) so
    that there are about ``config.CUDA_SPLIT_BLOCKS`` blocks: at batch 10 a 1000 x 1000 layer
    has 16 column tiles and one row tile, and the splits give the other SMs work. The count is
    fixed, not read from the GPU, so that the sums (and so the bits) are the same on every GPU
    (on CUDA cores: with ``tf32`` the tensor cores add each 8-term product their own way, which
    may differ between GPU generations).
    """
    tm, tn, tk = config.CUDA_GEMM_TILE
    tiles = _ceil(Nc, tn) * _ceil(M, tm)
    want = max(1, min(_ceil(R, tk), _ceil(config.CUDA_SPLIT_BLOCKS, tiles)))
    chunk = _ceil(_ceil(R, want), tk) * tk
    splits = _ceil(R, chunk)
    return (_ceil(Nc, tn), _ceil(M, tm), splits), (tn // 4, tm // 4, 1), chunk, splits


def columns_geometry(n, sms):
    """(grid, block) of a kernel with one thread per column (grid-stride beyond that)."""
    threads = int(config.CUDA_THREADS)
    return (max(1, min(_ceil(n, threads), config.CUDA_BLOCKS_PER_SM * sms)),), (threads,)


def delta_geometry(B, N):
    """(grid, block) of dense_backward_delta: blocks of CUDA_THREADS columns by
    CUDA_DELTA_ROWS rows, so that a large batch spreads over the SMs."""
    threads = int(config.CUDA_THREADS)
    return (_ceil(N, threads), _ceil(B, config.CUDA_DELTA_ROWS), 1), (threads, 1, 1)


def update_geometry(K, N):
    """(grid, block, blocks) of the weight update: one block per UT x UT tile of W."""
    ut = config.CUDA_UPDATE_TILE
    grid = (_ceil(N, ut), _ceil(K, ut), 1)
    return grid, (ut // 4, ut // 4, 1), grid[0] * grid[1]


# -- the runtime: CuPy on a GPU (tests swap in the host emulator) -----------------------------
_VALUE_TYPES = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
                np.dtype(np.uint32): ctypes.c_uint32, np.dtype(np.uint64): ctypes.c_uint64,
                np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


def kernel_params(args, address):
    """CUDA's form of a launch's arguments: an array of pointers to each value, with the
    values it points to (keep both alive until the launch has been issued). ``address(a)``
    gives an array's device address; scalars must be NumPy scalars of the kernel's types."""
    values = []
    for a in args:
        if on_device(a) or isinstance(a, np.ndarray) and a.ndim > 0:
            values.append(ctypes.c_void_p(address(a)))
        else:
            values.append(_VALUE_TYPES[np.asarray(a).dtype](np.asarray(a).item()))
    params = (ctypes.c_void_p * max(1, len(values)))()
    for i, v in enumerate(values):
        params[i] = ctypes.cast(ctypes.pointer(v), ctypes.c_void_p)
    return params, values


class Graph:
    """Launches recorded by :meth:`Runtime.capture`, run again by :meth:`launch`; it keeps
    every array its launches were given, so none is freed while the graph can run."""

    def __init__(self, rt):
        self.rt, self.nodes, self.keep = rt, [], []

    def record(self, name, grid, block, args, cooperative):
        self.nodes.append((name, grid, block, args, cooperative))
        self.keep += [a for a in args if not np.isscalar(a)]

    def launch(self):
        """Run the recorded launches in order on the current stream."""
        self.rt.run_graph(self)


class Runtime:
    """Where kernels launch: ``xp`` (its array module), ``sms``, ``launch``, ``resident``
    (how many blocks of a cooperative launch fit on the device at once), ``empty``,
    ``scratch`` and ``capture``. Every allocation of the CUDA launch code goes through
    ``empty``, so that a test can count them (the launch audit)."""

    xp = np
    sms = 1
    graph = None  # the Graph being recorded, during capture()

    def launch(self, name, grid, block, args, cooperative=False):
        raise NotImplementedError

    def capture(self, loss_slot=None):
        """A context whose launches are recorded into a :class:`Graph` (run by its
        ``launch``), not run; it may not allocate (every buffer must exist before).
        ``loss_slot``: a float64 device array of one element where the captured step's cost
        writes its loss (default: one made now), never handed out by :meth:`loss_slots`."""
        return _Capture(self, Graph(self), loss_slot)

    def run_graph(self, graph):
        """Run a recorded graph: its launches again, in order."""
        for name, grid, block, args, cooperative in graph.nodes:
            self.launch(name, grid, block, args, cooperative)

    def resident(self, name, threads):
        """Blocks of ``threads`` threads of kernel ``name`` that can run at once."""
        raise NotImplementedError

    def free_bytes(self):
        """Device memory still free for new arrays, in bytes; None where it cannot be told."""
        return None

    def compute_capability(self):
        """The current device's compute capability, as "major.minor"."""
        return "8.0"

    def has_tf32(self):
        """Whether the current device has TF32 tensor cores (compute capability 8.0 or newer)."""
        return float(self.compute_capability()) >= 8.0

    def empty(self, shape, dtype):
        """A new device array (the only way the launch code allocates)."""
        if self.graph is not None:
            raise DeviceError("an allocation while a CUDA graph is captured: every buffer of a "
                              "captured step must exist before the capture")
        return self.xp.empty(shape, dtype)

    def zeros(self, shape, dtype):
        out = self.empty(shape, dtype)
        out.fill(0)
        return out

    def upload(self, out, host):
        """Copy the host array ``host`` into the device array ``out`` (same shape and dtype),
        in stream order, allocating nothing."""
        out[...] = host

    def scratch(self, name, size, dtype):
        """A reused buffer of at least ``size`` elements (no allocation per step), one per name
        and stream: launches on another stream get their own."""
        store = self.__dict__.setdefault("_scratch", {})
        key = (name, np.dtype(dtype), self.stream())
        buf = store.get(key)
        if buf is None or buf.size < size:
            buf = store[key] = self.empty(max(1, size), dtype)
        return buf

    def stream(self):
        """The stream launches go to now (its handle)."""
        return 0

    def counters(self, size):
        """Arrival counters of the fused kernels (fastff::last_to_arrive): zeroed when made,
        and left at zero by every launch, so one set per stream serves them all in turn."""
        store = self.__dict__.setdefault("_counters", {})
        key = self.stream()
        buf = store.get(key)
        if buf is None or buf.size < size:
            buf = store[key] = self.zeros(max(64, size), np.uint32)
        return buf

    def rate(self, lr, dtype):
        """A one-element device array holding the learning rate ``lr`` for this stream's SGD
        kernels (they read it there: a captured step serves any rate); it is written only
        when the rate changes, in stream order."""
        store = self.__dict__.setdefault("_rates", {})
        key = (np.dtype(dtype), self.stream())
        entry = store.get(key)
        if entry is None:
            entry = store[key] = [self.empty(1, dtype), None]
        if entry[1] != lr:
            entry[0].fill(lr)
            entry[1] = lr
        return entry[0]

    def loss_slots(self, count=1):
        """``count`` consecutive float64 slots for steps' losses, from one ring of
        config.CUDA_STEP_LOSS_RING: they keep their values until the ring comes round again, so
        a trainer may hold its steps' losses on the device until it logs (fastff.train reads
        them every config.LOSS_READ_EVERY steps) without an allocation per step."""
        ring = self.__dict__.get("_loss_ring")
        if ring is None or ring.shape[0] != config.CUDA_STEP_LOSS_RING:
            ring = self._loss_ring = self.zeros(config.CUDA_STEP_LOSS_RING, np.float64)
            self._loss_next = 0
        if not 1 <= count <= ring.shape[0]:
            raise InputError(f"at most config.CUDA_STEP_LOSS_RING = {ring.shape[0]} losses at "
                             f"once, got {count}")
        if self.graph is not None:  # a captured step writes its own slot on every replay
            return self.graph.loss_slot[:count]
        k = self._loss_next if self._loss_next + count <= ring.shape[0] else 0
        self._loss_next = k + count
        return ring[k:k + count]

    @staticmethod
    def address(a):
        """The device address of array ``a``'s first element."""
        return a.ctypes.data


class _Capture:
    """Runtime.capture's context: the runtime records into ``graph`` while it is open."""

    def __init__(self, rt, graph, loss_slot=None):
        self.rt, self.graph = rt, graph
        # the loss of the captured step, which every replay rewrites (made before the capture)
        graph.loss_slot = rt.zeros(1, np.float64) if loss_slot is None else loss_slot

    def __enter__(self):
        if self.rt.graph is not None:
            raise DeviceError("a CUDA graph is already being captured")
        self.rt.graph = self.graph
        return self.graph

    def __exit__(self, *exc):
        self.rt.graph = None
        return False


class CuPyRuntime(Runtime):
    """Compiles the sources (once per set of compile options: a CUDA setting of config changed
    after the first launch compiles them again, never mixes) and launches on the current
    device."""

    def __init__(self):
        from ...device import resolve
        resolve("cuda")  # a DeviceError saying what is missing (CuPy, a driver, a GPU)
        import cupy
        self.xp = cupy
        self.sms = int(cupy.cuda.Device().attributes["MultiProcessorCount"])
        self._modules, self._functions, self._resident, self._capability = {}, {}, {}, {}

    def function(self, name):
        options = compile_options()
        key = (options, name)
        fn = self._functions.get(key)
        if fn is None:
            module = self._modules.get(options)
            if module is None:
                module = self._modules[options] = self.xp.RawModule(
                    code=source(), options=options, name_expressions=name_expressions())
            fn = self._functions[key] = module.get_function(name)
        return fn

    def launch(self, name, grid, block, args, cooperative=False):
        fn = self.function(name)
        if self.graph is not None:  # recorded by the stream capture; keep its arrays alive
            self.graph.keep += [a for a in args if not np.isscalar(a)]
        if not cooperative:
            fn(tuple(grid), tuple(block), args)
            return
        from cupy.cuda import driver
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        params, values = kernel_params(args, self.address)
        driver.launchCooperativeKernel(fn.kernel.ptr, *grid, *block, 0,
                                       self.xp.cuda.get_current_stream().ptr,
                                       ctypes.addressof(params))

    def resident(self, name, threads):
        device = self.xp.cuda.Device()  # the current one: its SMs, not the first device's
        key = (compile_options(), name, threads, device.id)
        if key not in self._resident:
            from cupy.cuda import driver
            per_sm = driver.occupancyMaxActiveBlocksPerMultiprocessor(
                self.function(name).kernel.ptr, threads, 0)
            self._resident[key] = int(per_sm) * int(device.attributes["MultiProcessorCount"])
        return self._resident[key]

    def compute_capability(self):
        device = self.xp.cuda.Device()  # the current one, asked once (a launch checks it)
        cc = self._capability.get(device.id)
        if cc is None:
            cc = str(device.compute_capability)  # "90" for sm_90, "100" for sm_100
            cc = self._capability[device.id] = f"{cc[:-1]}.{cc[-1]}"
        return cc

    def free_bytes(self):
        """Free on the current device, counting what CuPy's pool holds but no array uses."""
        free, _ = self.xp.cuda.runtime.memGetInfo()
        return int(free) + int(self.xp.get_default_memory_pool().free_bytes())

    def stream(self):
        """(device, stream handle, host thread where the handle is the per-thread default
        stream, which every thread calls 2): what keeps per-stream buffers apart."""
        if self.graph is not None:  # buffers are the stream's the graph will run on
            return self.graph.stream
        ptr = self.xp.cuda.get_current_stream().ptr
        return (self.xp.cuda.Device().id, ptr, threading.get_ident() if ptr == 2 else 0)

    def capture(self, loss_slot=None):
        """Stream capture of the launches inside (on a non-blocking stream of its own) into a
        CUDA graph that ``launch`` runs on the current stream."""
        return _CuPyCapture(self, loss_slot)

    def run_graph(self, graph):
        graph.cuda_graph.launch(stream=self.xp.cuda.get_current_stream())

    def upload(self, out, host):
        out.set(np.ascontiguousarray(host, out.dtype))  # on the current stream, into ``out``

    @staticmethod
    def address(a):
        return a.data.ptr


class _CuPyCapture(_Capture):
    """CuPyRuntime.capture's context: a CUDA stream capture."""

    def __init__(self, rt, loss_slot=None):
        super().__init__(rt, Graph(rt), loss_slot)

    def __enter__(self):
        cupy = self.rt.xp
        self.current = cupy.cuda.get_current_stream()
        self.graph.stream = self.rt.stream()
        self.side = cupy.cuda.Stream(non_blocking=True)
        super().__enter__()
        try:
            self.side.use()
            self.side.begin_capture()
        except BaseException:  # no capture open: the runtime as it was
            self.current.use()
            super().__exit__()
            raise
        return self.graph

    def __exit__(self, kind, value, tb):
        try:
            graph = self.side.end_capture()
        except Exception:
            if kind is None:
                raise
            graph = None  # the body's own error is the one to see
        finally:
            self.current.use()
            super().__exit__(kind, value, tb)
        self.graph.cuda_graph = graph
        return False


_RUNTIME = None

# ptxas flags of the compile gate: resource usage in the log, and spills or local memory fail
PTXAS_GATE = ("-Xptxas", "-v", "-Xptxas", "-warn-spills", "-Xptxas", "-warn-lmem-usage",
              "-Xptxas", "--warning-as-error")


def compile_report(arch, src=None):
    """Compile every kernel instance with NVRTC for ``arch`` (``sm_80``, ``sm_90``), ptxas
    warnings as errors, and return one dict per instance: registers, shared memory, stack,
    spills and the threads per block the launches use. Needs CuPy's NVRTC, not a GPU.

    Raises DeviceError with the compiler's log when the compile fails (a spill, local memory).
    ``src`` replaces :func:`source` (the tests break a kernel on purpose with it).
    """
    try:
        from cupy.cuda import nvrtc
    except ImportError as exc:
        raise DeviceError(f"the compile check needs CuPy's NVRTC: pip install 'fastff[cuda]' ({exc})") from None
    import re
    names = name_expressions()
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
        if m and m.group(1) in lowered:
            current = rows.setdefault(lowered[m.group(1)], dict(kernel=lowered[m.group(1)]))
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
    if name.startswith(("dense_forward_fused", "grad_x_fused")):
        return (tn // 4) * (tm // 4)
    if name.startswith(("dense_backward_update", "second_order_update")):
        return (ut // 4) ** 2
    if name.startswith("train_steps"):
        return config.CUDA_STEP_STRIP * config.CUDA_STEP_LANES
    if name == "shapeset_render":
        return SHAPESET_THREADS
    return int(config.CUDA_THREADS)


def blocks_per_sm(name):
    """Blocks an SM must hold at once by kernel ``name``'s __launch_bounds__ (its second
    argument, which caps the registers ptxas gives a thread)."""
    if name.startswith(("dense_forward_fused", "grad_x_fused", "dense_backward_update",
                        "second_order_update", "shapeset_render")):
        return 1
    return int(config.CUDA_BLOCKS_PER_SM)


def runtime():
    """The runtime kernels launch through (created on first use)."""
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = CuPyRuntime()
    return _RUNTIME


_i32, _i64, _f64 = np.int32, np.int64, np.float64


def _dummies(rt):
    """Stand-ins for statistics arrays a launch without statistics never touches."""
    return rt.scratch("no_i64", 2, np.int64), rt.scratch("no_f64", 2, np.float64)


def _layer(x, W):
    """(runtime, batch, n_in, n_out, dtype, C++ type) of one layer's launches."""
    return runtime(), x.shape[0], x.shape[1], W.shape[1], W.dtype, CTYPES[W.dtype]


def check_tf32(dtype, rt=None):
    """Refuse TF32 products for anything but float32, with GEMM tiles that the tensor-core
    path cannot cover (rows a multiple of 32, columns of 16, depth of 8: a warp forms 32 x 16
    outputs from 16 x 8 x 8 products), or on runtime ``rt``'s GPU where it has no TF32."""
    if rt is not None and not rt.has_tf32():
        raise DeviceError(f"tf32=True needs TF32 tensor cores (compute capability 8.0 or newer); "
                          f"this GPU is {rt.compute_capability()}")
    if np.dtype(dtype) != np.float32:
        raise InputError(f"tf32=True rounds float32 operands to TF32 on tensor cores; the "
                         f"parameters are {np.dtype(dtype).name}")
    tm, tn, tk = config.CUDA_GEMM_TILE
    if tm % 32 or tn % 16 or tk % 8:
        raise InputError(f"tf32=True needs config.CUDA_GEMM_TILE rows a multiple of 32, columns "
                         f"of 16 and depth of 8; it is {config.CUDA_GEMM_TILE}")


def _split_k(rt, kernel, a, W, B, K, N, transposed, out=None):
    """(grid, block, leading arguments) of one layer's fused split-K product (x @ W, or
    delta @ W^T when ``transposed``): the operands, the per-split partial products (a scratch
    buffer; with one split and ``out`` given, ``out`` itself) and the tiles' arrival counters."""
    M, R, Nc = (B, N, K) if transposed else (B, K, N)
    grid, block, chunk, splits = gemm_geometry(M, R, Nc)
    if splits == 1 and out is not None:
        parts = out
    else:
        parts = rt.scratch(kernel, splits * M * Nc, W.dtype)
    counters = rt.counters(grid[0] * grid[1] + grid[0])
    return grid, block, chunk, (a, W, parts, counters)


def forward_unchecked(x, W, b, activation, out=None, stats=None, prefetch=True,
                      parallel=True, tf32=False):
    """dense_forward on checked device arrays (``prefetch`` and ``parallel``, CPU hints,
    mean nothing here; ``tf32``: the product on tensor cores in TF32, float32 only)."""
    rt, B, K, N, T, ct = _layer(x, W)
    if tf32:
        check_tf32(T, rt)
    if out is None:
        out = rt.empty((B, N), T)
    name = f"dense_forward_fused<{ct}, {activations.CODES[activation]}>"
    grid, block, chunk, head = _split_k(rt, name, x, W, B, K, N, False)
    no_i64, no_f64 = _dummies(rt)
    if stats is None:
        st = (_i32(0), T.type(0), T.type(0), no_i64, no_i64, no_f64, no_f64, no_i64, _i32(1),
              _f64(0), _f64(0), no_i64)
        col_parts = no_f64
    else:
        bins = int(stats.hist.shape[0])  # the array's own length: what the kernel may index
        if bins > config.CUDA_MAX_BINS:
            raise InputError(f"the CUDA kernels count at most config.CUDA_MAX_BINS = "
                             f"{config.CUDA_MAX_BINS} histogram bins, got {bins}")
        st = (_i32(1), T.type(stats.low), T.type(stats.high), stats.sat_low, stats.sat_high,
              stats.total, stats.total_sq, stats.hist, _i32(bins), _f64(stats.hist_lo),
              _f64(bins / (stats.hist_hi - stats.hist_lo)), stats.rows)
        col_parts = rt.scratch("column_parts", grid[1] * 4 * N, np.float64)
    rt.launch(name, grid, block, head + (col_parts, b, out, _i32(B), _i32(K), _i32(N),
                                         _i32(chunk), _i32(bool(tf32))) + st)
    return out


def backward_unchecked(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True, delta=None, prefetch=True, parallel=True, tf32=False):
    """dense_backward_sgd on checked device arrays; ``delta`` is an optional (batch, n_out)
    workspace; ``tf32``: dC/dx on tensor cores in TF32 (float32 only)."""
    rt, B, K, N, T, ct = _layer(x, W)
    if tf32:
        check_tf32(T, rt)
    if delta is None:
        delta = rt.scratch("delta", B * N, T)[:B * N].reshape(B, N)
    no_i64, no_f64 = _dummies(rt)
    want = stats is not None
    grid, block = delta_geometry(B, N)
    rate = rt.rate(lr, T)
    rt.launch(f"dense_backward_delta<{ct}, {activations.CODES[activation]}>", grid, block,
              (grad_h, h, delta, b, rate, _i32(B), _i32(N), rt.counters(grid[0]),
               rt.scratch("column_parts", grid[1] * 3 * N, np.float64), _i32(want),
               stats.delta_total if want else no_f64, stats.delta_total_sq if want else no_f64,
               stats.counts if want else no_i64))
    if compute_grad_x:
        if grad_x is None:
            grad_x = rt.empty((B, K), T)
        _grad_x(rt, delta, W, grad_x, B, K, N, ct, tf32)
    rt.launch(f"dense_backward_update<{ct}>", *_update_launch(rt, K, N),
              (x, delta, W, rate, _i32(B), _i32(K), _i32(N)) + _grad_w_sums(rt, K, N, stats))
    return grad_x if compute_grad_x else None


def _update_launch(rt, K, N):
    grid, block, _ = update_geometry(K, N)
    return grid, block


def _grad_w_sums(rt, K, N, stats):
    """The last arguments of an update launch: whether to sum dC/dW, the blocks' partial sums,
    their arrival counter and the totals."""
    want = stats is not None and stats.weight_grad
    _, _, blocks = update_geometry(K, N)
    no_f64 = _dummies(rt)[1]
    return (_i32(want), rt.scratch("grad_w_parts", 2 * blocks, np.float64), rt.counters(1),
            stats.grad_w_total if want else no_f64, stats.grad_w_total_sq if want else no_f64)


def _grad_x(rt, a, W, out, B, K, N, ct, tf32=False):
    """out = a @ W^T in one launch (split-K partial products, added in a fixed order by the
    last block of each tile; one split is written into ``out`` directly)."""
    name = f"grad_x_fused<{ct}>"
    grid, block, chunk, head = _split_k(rt, name, a, W, B, K, N, True, out)
    rt.launch(name, grid, block, head + (out, _i32(B), _i32(K), _i32(N), _i32(chunk),
                                         _i32(bool(tf32))))


def second_order_unchecked(x, h, W, b, grad_h, activation, lr, rates, curv_h=None, grad_x=None,
                           curv_x=None, stats=None, compute_grad_x=True, delta=None,
                           prefetch=True, parallel=True, tf32=False):
    """dense_backward_second_order on checked device arrays; ``delta`` is an optional
    (batch, n_out) workspace; ``tf32``: dC/dx (and the curvature's product) in TF32."""
    rt, B, K, N, T, ct = _layer(x, W)
    if tf32:
        check_tf32(T, rt)
    hessian = rates.method == "diag_hessian"
    if delta is None:
        delta = rt.scratch("delta", B * N, T)[:B * N].reshape(B, N)
    q = rt.scratch("rates_q", B * N, T)[:B * N].reshape(B, N)
    no_i64, no_f64 = _dummies(rt)
    want = stats is not None
    # lr / (1 + A / damping) as lr * damping / (damping + A), as the CPU's
    hyper = (T.type(lr * rates.damping), _i32(hessian), T.type(rates.damping),
             T.type(rates.decay), T.type(rates.correction()))
    grid, block = columns_geometry(N, rt.sms)
    rt.launch(f"second_order_columns<{ct}, {activations.CODES[activation]}>", grid, block,
              # grad_variance reads no curvature: h stands in (not q, which is written)
              (grad_h, h, curv_h if hessian else h, delta, q, b, rates.b) + hyper
              + (_i32(B), _i32(N), _i32(want), stats.delta_total if want else no_f64,
                 stats.delta_total_sq if want else no_f64, stats.counts if want else no_i64))
    if compute_grad_x:
        if grad_x is None:
            grad_x = rt.empty((B, K), T)
        _grad_x(rt, delta, W, grad_x, B, K, N, ct, tf32)
        if hessian:
            if curv_x is None:
                curv_x = rt.empty((B, K), T)
            w_sq = rt.scratch("rates_w_sq", K * N, T)[:K * N].reshape(K, N)
            grid, block = columns_geometry(K * N, rt.sms)
            rt.launch(f"square_into<{ct}>", grid, block, (W, w_sq, _i64(K * N)))
            _grad_x(rt, q, w_sq, curv_x, B, K, N, ct, tf32)
    rt.launch(f"second_order_update<{ct}>", *_update_launch(rt, K, N),
              (x, delta, q, W, rates.W) + hyper + (_i32(B), _i32(K), _i32(N))
              + _grad_w_sums(rt, K, N, stats))
    rates.steps += 1
    return ((grad_x if compute_grad_x else None),
            (curv_x if compute_grad_x and hessian else None))


def _softmax_loss(kernel, z, y, grad_z):
    rt = runtime()
    B, K = z.shape
    if grad_z is None:
        grad_z = rt.empty(z.shape, z.dtype)
    loss = rt.loss_slots()
    rt.launch(f"{kernel}<{CTYPES[z.dtype]}>", (1, 1, 1), (int(config.CUDA_THREADS), 1, 1),
              (z, y, grad_z, rt.scratch("row_loss", B, np.float64), loss, _i32(B), _i32(K)))
    return loss.reshape(()), grad_z  # a view of the slot (a graph replay writes it again)


def softmax_nll_unchecked(z, y, grad_z=None):
    """softmax_nll on checked device arrays; the loss comes back as a 0-d device array (no
    synchronization)."""
    return _softmax_loss("softmax_nll", z, y, grad_z)


def softmax_quadratic_unchecked(z, y, grad_z=None):
    """softmax_quadratic on checked device arrays; the loss stays a 0-d device array."""
    return _softmax_loss("softmax_quadratic", z, y, grad_z)


def require_on_device(rt, **arrays):
    """Every array must be this runtime's (CuPy on a GPU): fastff never copies behind your back."""
    for name, a in arrays.items():
        if a is not None and not isinstance(a, rt.xp.ndarray):
            raise DeviceError(f"{name} is a {type(a).__module__}.{type(a).__name__}; the CUDA "
                              f"kernels take {rt.xp.__name__} arrays (move it with cupy.asarray)")


def dense_forward(x, W, b, activation, out=None, stats=None, *, tf32=False):
    """h = f(x @ W + b) with statistics on the GPU; the contract of reference.dense_forward.

    ``tf32=True`` (CUDA only, float32 only) forms x @ W on tensor cores with its operands
    rounded to TF32 (10-bit mantissa): faster at large batches, no longer the paper's float32
    numbers (relative error about 1e-3, growing with the layer's width).
    """
    tf32 = flag("tf32", tf32)
    rt = runtime()
    require_on_device(rt, x=x, W=W, b=b, out=out)
    activation, out = forward_args(x, W, b, activation, out, stats, rt.xp)
    xp = rt.xp
    return forward_unchecked(xp.ascontiguousarray(x), xp.ascontiguousarray(W),
                             xp.ascontiguousarray(b), activation, out, stats,
                             tf32=tf32)


def dense_backward_sgd(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True, *, tf32=False):
    """Backward pass and SGD update on the GPU; the contract of reference.dense_backward_sgd
    (``tf32``: dC/dx in TF32, as :func:`dense_forward`'s)."""
    tf32 = flag("tf32", tf32)
    rt = runtime()
    require_on_device(rt, x=x, h=h, W=W, b=b, grad_h=grad_h, grad_x=grad_x)
    activation, grad_x = backward_args(x, h, W, b, grad_h, activation, lr, grad_x, stats,
                                       compute_grad_x, rt.xp)
    xp = rt.xp
    return backward_unchecked(xp.ascontiguousarray(x), xp.ascontiguousarray(h), W, b,
                              xp.ascontiguousarray(grad_h), activation, lr, grad_x, stats,
                              bool(compute_grad_x), tf32=tf32)


def dense_backward_second_order(x, h, W, b, grad_h, activation, lr, rates, curv_h=None,
                                grad_x=None, curv_x=None, stats=None, compute_grad_x=True):
    """Backward pass and per-parameter-rate update on the GPU; the contract of
    reference.dense_backward_second_order."""
    rt = runtime()
    require_on_device(rt, x=x, h=h, W=W, b=b, grad_h=grad_h, curv_h=curv_h, grad_x=grad_x,
               curv_x=curv_x, rates_W=getattr(rates, "W", None), rates_b=getattr(rates, "b", None))
    grad_x, curv_x = second_order_args(x, h, W, b, grad_h, activation, lr, rates, curv_h,
                                       grad_x, curv_x, stats, compute_grad_x, rt.xp)
    c = rt.xp.ascontiguousarray
    return second_order_unchecked(c(x), c(h), W, b, c(grad_h), activations.get(activation).name,
                                  lr, rates, None if curv_h is None else c(curv_h), grad_x,
                                  curv_x, stats, bool(compute_grad_x))


def _checked_loss(unchecked, z, y, grad_z):
    rt = runtime()
    require_on_device(rt, z=z, y=y, grad_z=grad_z)
    grad_z = softmax_args(z, y, grad_z, rt.xp)
    loss, grad_z = unchecked(rt.xp.ascontiguousarray(z),
                             rt.xp.ascontiguousarray(y, dtype=np.int64), grad_z)
    return float(loss), grad_z


def softmax_nll(z, y, grad_z=None):
    """Mean softmax NLL and its gradient on the GPU; the contract of reference.softmax_nll
    (the loss is returned as a float: one synchronization)."""
    return _checked_loss(softmax_nll_unchecked, z, y, grad_z)


def softmax_quadratic(z, y, grad_z=None):
    """Mean quadratic cost of a softmax and its gradient on the GPU; the contract of
    reference.softmax_quadratic (the loss is returned as a float)."""
    return _checked_loss(softmax_quadratic_unchecked, z, y, grad_z)
