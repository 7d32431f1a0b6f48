"""Where the CUDA kernels run: a :class:`Runtime` (CuPy on a GPU, :class:`CuPyRuntime`; the
tests swap in the host emulator with :func:`set_runtime`) compiles, launches, allocates, keeps
per-stream buffers and records CUDA graphs.
"""
import ctypes
import threading

import numpy as np

from ... import config
from ...errors import DeviceError, InputError
from .arguments import Prepared, PackedArgs, kernel_params, named_args
from .compiler import compile_options, name_expressions, source


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
        """Launch kernel ``name`` (a name expression) with ``args`` in its parameters' order."""
        raise NotImplementedError

    def launch_named(self, name, grid, block, cooperative=False, **fields):
        """Launch kernel ``name`` with its arguments by their names in the ``.cu`` source
        (:func:`fastff.kernels.cuda.compiler.parameters`): a field the kernel does not take, or
        a parameter left out, is an error, not a shifted argument."""
        self.launch(name, grid, block, named_args(name, fields), cooperative)

    def prepare(self, name, grid, block, cooperative=False, **fields):
        """A :class:`Prepared` launch of ``name``: its arguments named and checked as
        :meth:`launch_named` checks them, once; a step then sets only what changed."""
        return Prepared(self, name, grid, block, cooperative, fields)

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
        device = self.xp.cuda.Device().id  # each device compiles for its own architecture
        key = (options, name, device)
        fn = self._functions.get(key)
        if fn is None:
            names = name_expressions()
            # an instance outside the module (the persistent step for fewer rows): a module of
            # its own, compiled when first asked for
            which = None if name in names else name
            module = self._modules.get((options, device, which))
            if module is None:
                module = self._modules[options, device, which] = self.xp.RawModule(
                    code=source(), options=options,
                    name_expressions=names if which is None else [name])
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

    def prepare(self, name, grid, block, cooperative=False, **fields):
        return CuPyPrepared(self, name, grid, block, cooperative, fields)

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


class CuPyPrepared(Prepared):
    """A prepared cooperative launch on CuPy: its arguments packed once, the changed ones
    repacked; launched straight through the driver (a stream capture takes the plain path)."""

    packed = None

    def set(self, **fields):
        super().set(**fields)
        if self.packed is not None:
            for field in fields:
                self.packed.update(self.slot[field], self.args[self.slot[field]])

    def launch(self):
        if not self.cooperative or self.rt.graph is not None:
            return super().launch()
        from cupy.cuda import driver
        if self.packed is None or self.options is not compile_options():
            self.options = compile_options()  # a changed CUDA setting compiles, as launch does
            self.packed = PackedArgs(self.args, self.rt.address)
            self.fn = self.rt.function(self.name).kernel.ptr
            self.dims = (self.grid + (1,) * (3 - len(self.grid))
                         + self.block + (1,) * (3 - len(self.block)))
        driver.launchCooperativeKernel(self.fn, *self.dims, 0,
                                       self.rt.xp.cuda.get_current_stream().ptr,
                                       ctypes.addressof(self.packed.params))


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


def runtime():
    """The runtime kernels launch through (created on first use)."""
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = CuPyRuntime()
    return _RUNTIME


def set_runtime(rt):
    """Make ``rt`` the runtime kernels launch through (None: a CuPy one on next use); returns
    the one it replaces (the tests' host emulator swaps itself in and back)."""
    global _RUNTIME
    old, _RUNTIME = _RUNTIME, rt
    return old


def require_on_device(rt, **arrays):
    """Every array must be this runtime's (CuPy on a GPU): fastff never copies behind your back."""
    for name, a in arrays.items():
        if a is not None and not isinstance(a, rt.xp.ndarray):
            raise DeviceError(f"{name} is a {type(a).__module__}.{type(a).__name__}; the CUDA "
                              f"kernels take {rt.xp.__name__} arrays (move it with cupy.asarray)")
