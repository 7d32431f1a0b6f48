"""A whole training step on the GPU: one cooperative launch of ``train_steps`` (train_step.cu)
per SGD step, or per several steps, in place of 4 L layer-by-layer launches; where that kernel
does not apply, the layer-by-layer launches captured once in a CUDA graph (:class:`LayerGraph`).

:class:`CUDAPlan` is the CUDA backend's :class:`~fastff.kernels.backend.Plan`; its
``whole_step`` runs a model's step through a :class:`StepLaunch` where the persistent kernel
applies (``config.CUDA_STEP_PATH``) and returns None where the layer-by-layer kernels must run.
A :class:`StepLaunch` is built once per model, batch size and statistics object: the layer
table, the grid, the device buffers; :class:`Lockstep` builds one for several models of one
shape, so that one launch steps them all (:func:`fastff.train_many`). A step then allocates
nothing, synchronizes nothing and uploads nothing but a changed learning rate or batch
address: it is one launch.
"""
import operator
import warnings

import numpy as np

from ... import config
from ...arrays import to_host
from ...errors import InputError
from ..backend import Plan
from .barrier import BARRIER_WORDS, check_barrier, threads
from .compiler import CTYPES, step_name
from .fused_pass import COSTS, output_and_backward
from .layer_graph import LayerGraph, same_step, versions
from .runtimes import runtime

SLOTS = 24  # int64 slots of a fastff::LayerDesc
_FIELDS = ("W", "b", "h", "delta", "sat_low", "sat_high", "total", "total_sq", "hist", "rows",
           "d_total", "d_total_sq", "counts", "gw_total", "gw_total_sq", "gw_parts",
           "K", "N", "bins", "unused", "low", "high", "hist_lo", "hist_scale")
assert len(_FIELDS) == SLOTS


def strips(n):
    """Strips of config.CUDA_STEP_STRIP units that cover ``n`` units."""
    return -(-n // config.CUDA_STEP_STRIP)


def why_not_persistent(sizes, batch, rates, loss):
    """None where the persistent step runs this step, else the reason it cannot."""
    if rates is not None:
        return "per-parameter rates run on the layer-by-layer kernels"
    if loss not in COSTS:
        return f"the {loss!r} cost has no persistent step"
    if batch > config.CUDA_STEP_MAX_BATCH:
        return f"batch {batch} > config.CUDA_STEP_MAX_BATCH = {config.CUDA_STEP_MAX_BATCH}"
    if sizes[-1] > config.CUDA_STEP_MAX_CLASSES:
        return (f"{sizes[-1]} classes > config.CUDA_STEP_MAX_CLASSES = "
                f"{config.CUDA_STEP_MAX_CLASSES}")
    return None


class StepLaunch:
    """Everything one persistent launch needs for one model, batch size and statistics, or for
    a group of models of one shape trained in lockstep (:meth:`group`, for
    :func:`fastff.train_many`): one launch steps them all.

    Parameters
    ----------
    params : list of (W, b)
        The model's parameters (device arrays; updated in place by every step).
    activation : str
        The hidden layers' activation.
    batch : int
    workspace : dict
        The plan's workspace for ``batch``: ``h`` and ``delta`` arrays of every layer.
    stats : StepStats or None
    loss : str
        ``nll`` or ``quadratic``.
    rt : Runtime, optional
        Where it launches (default: :func:`fastff.kernels.cuda.runtime`).
    """

    def __init__(self, params, activation, batch, workspace, stats, loss, rt=None):
        self._build([(params, workspace, stats)], activation, batch, loss, rt)
        self.grouped = False

    @classmethod
    def group(cls, nets, activation, batch, loss, rt=None):
        """One launch for several models of one shape and dtype: ``nets`` is a list of
        (params, workspace, stats), one per model; :meth:`run` then takes a list of batches,
        labels and rates, one per model, and returns their losses (models, steps)."""
        self = object.__new__(cls)
        self._build(list(nets), activation, batch, loss, rt)
        self.grouped = True
        return self

    def _build(self, nets, activation, batch, loss, rt):
        rt = runtime() if rt is None else rt
        if not nets:
            raise InputError("a step launch needs at least one model")
        # the arrays the layer table points to stay referenced here while it is in use
        self.rt, self.batch, self.nets = rt, batch, nets
        self.params, self.workspace, self.stats = nets[0]
        self.dtype = np.dtype(self.params[0][0].dtype)
        self.activation = activation
        self.kernel = step_name(CTYPES[self.dtype], activation, batch)
        self.cost, self.loss_name = COSTS[loss], loss
        self.sizes = _sizes(self.params)
        for params, _, _ in nets:
            shape = _sizes(params)
            if shape != self.sizes or np.dtype(params[0][0].dtype) != self.dtype:
                raise InputError(f"the models of one launch must have one shape and dtype: "
                                 f"{shape} {params[0][0].dtype} beside {self.sizes} {self.dtype}")
        self.stream = rt.stream()
        self.versions = [versions(stats) for _, _, stats in nets]
        self.want_stats = any(stats is not None for _, _, stats in nets)
        self.want_gw = any(_wants_gw(stats) for _, _, stats in nets)
        L = len(self.params)
        table = np.zeros((len(nets), L, SLOTS), np.int64)
        self.gw_parts = []
        for n, (params, workspace, stats) in enumerate(nets):
            parts = [rt.zeros(2 * strips(W.shape[0]), np.float64)
                     if _wants_gw(stats) and l < L - 1 else None
                     for l, (W, _) in enumerate(params)]
            self.gw_parts.append(parts)
            for l, (W, b) in enumerate(params):
                table[n, l] = self._layer(l, W, b, workspace, stats, parts[l])
        self.desc = rt.empty(table.shape, np.int64)
        rt.upload(self.desc, table)
        self.io = rt.zeros((len(nets), 2), np.int64)  # each net's x and y addresses
        self.io_host = np.zeros((len(nets), 2), np.int64)
        self.barrier = rt.zeros(BARRIER_WORDS, np.uint32)
        # config.CUDA_PROFILE_STEP: the buffer the kernel's clock readings go to, and the
        # length of each phase of the last launch in nanoseconds (2 L a step, forward then
        # backward, each with its barrier)
        self.profile, self.phase_ns = None, None
        self.rates = rt.zeros(len(nets), self.dtype)
        self.rates_host = self.rate_key = None
        self.prepared = self.checked = None  # the launch and the batches run() last checked
        most = max(max(strips(W.shape[1]), strips(W.shape[0])) for W, _ in self.params)
        self.grid = max(1, min(len(nets) * most, rt.resident(self.kernel, threads())))

    def _layer(self, l, W, b, ws, stats, gw_parts):
        """Layer ``l``'s row of the table (train_step.cu's fastff::LayerDesc)."""
        addr = self.rt.address
        row = dict.fromkeys(_FIELDS, 0)
        row.update(W=addr(W), b=addr(b), h=addr(ws["h"][l]), delta=addr(ws["delta"][l]),
                   K=W.shape[0], N=W.shape[1])
        hidden = l < len(self.params) - 1
        if stats is not None and hidden:
            f, bw = stats.forward[l], stats.backward[l]
            bins = int(f.hist.shape[0])  # the array's own length: what the kernel may index
            if bins > config.CUDA_MAX_BINS:
                raise InputError(f"the CUDA kernels count at most config.CUDA_MAX_BINS = "
                                 f"{config.CUDA_MAX_BINS} histogram bins, got {bins}")
            row.update({name: addr(getattr(f, name)) for name in
                        ("sat_low", "sat_high", "total", "total_sq", "hist", "rows")})
            row.update(d_total=addr(bw.delta_total), d_total_sq=addr(bw.delta_total_sq),
                       counts=addr(bw.counts), bins=bins)
            if gw_parts is not None:
                row.update(gw_total=addr(bw.grad_w_total), gw_total_sq=addr(bw.grad_w_total_sq),
                           gw_parts=addr(gw_parts))
            doubles = np.array([f.low, f.high, f.hist_lo, bins / (f.hist_hi - f.hist_lo)],
                               np.float64).view(np.int64)
            row.update(zip(("low", "high", "hist_lo", "hist_scale"), doubles.tolist()))
        return [int(row[name]) for name in _FIELDS]

    def _profile(self, steps):
        """The profile buffer of a launch of ``steps`` steps (a one-slot stand-in when not
        profiling: the kernel does not touch it)."""
        size = 1 + 2 * len(self.params) * steps if config.CUDA_PROFILE_STEP else 1
        if self.profile is None or self.profile.shape[0] < size:
            self.profile = self.rt.zeros(size, np.uint64)
        return self.profile

    def matches(self, batch, stats, activation, loss):
        """Whether this (one-model) launch serves a step of ``batch`` rows with ``stats``,
        ``activation`` and ``loss`` on the current stream (its barrier and rates must not be
        shared by launches in flight on two streams)."""
        return not self.grouped and self.serves([(self.params, self.workspace, stats)], batch,
                                                activation, loss)

    def serves(self, nets, batch, activation, loss):
        """Whether this launch steps exactly ``nets`` (a list of (params, workspace, stats), as
        given to :meth:`group`) with ``batch``, ``activation`` and ``loss`` on the current
        stream."""
        return (same_step(self, batch, activation, loss) and len(nets) == len(self.nets)
                and all(p is q and w is v and s is t and versions(s) == version
                        for (p, w, s), (q, v, t), version in zip(nets, self.nets, self.versions)))

    def set_rate(self, lr, count=1):
        """The learning rate of the next ``count`` steps (one rate, or one per model of a
        group), uploaded only when it changes."""
        key = (count, *lr) if isinstance(lr, (list, tuple)) else (count, lr)
        if key == self.rate_key:  # the last launch's rates: nothing to do
            return
        self.rate_key = key
        rates = np.repeat(np.broadcast_to(np.asarray(lr, self.dtype), (len(self.nets),)), count)
        if self.rates_host is None or not np.array_equal(rates, self.rates_host):
            if self.rates.shape[0] != rates.shape[0]:
                self.rates = self.rt.empty(rates.shape[0], self.dtype)
            self.rt.upload(self.rates, rates)
            self.rates_host = rates

    def run(self, x, y, lr, steps=1):
        """``steps`` SGD steps on the batches ``x`` (steps * batch, n_in) or (steps, batch,
        n_in) and ``y`` (steps * batch,) or (steps, batch), device arrays of the model's dtype
        and int64 (their layout is checked here, not their values: a label out of range makes
        that step's loss NaN); returns the device array of their losses (slots of the
        runtime's loss ring, valid until it comes round). For a :meth:`group`, ``x``, ``y``
        and ``lr`` are lists with one entry per model, and the losses are (models, steps).
        The batches are read where they are: a trainer's batch buffers are reused, so a step
        checks and uploads nothing, and only the launch's changing arguments are set."""
        if not isinstance(steps, int) or not 1 <= steps <= config.CUDA_STEP_LOSS_RING:
            raise InputError(f"steps must be an integer in [1, config.CUDA_STEP_LOSS_RING = "
                             f"{config.CUDA_STEP_LOSS_RING}], got {steps!r}")
        nets = len(self.nets)
        xs, ys, lrs = (x, y, lr) if self.grouped else ([x], [y], [lr])
        if not (len(xs) == len(ys) == len(lrs) == nets):
            raise InputError(f"a launch of {nets} models takes {nets} batches, labels and "
                             f"rates, got {len(xs)}, {len(ys)} and {len(lrs)}")
        if steps * nets > config.CUDA_STEP_LOSS_RING:
            raise InputError(f"{nets} models x {steps} steps: more losses than "
                             f"config.CUDA_STEP_LOSS_RING = {config.CUDA_STEP_LOSS_RING}")
        seen = self.checked  # the same arrays, still of the shape, strides and dtype checked
        if seen is None or not (steps == seen[0] and all(map(operator.is_, xs, seen[1]))
                                and all(map(operator.is_, ys, seen[2]))
                                and _layouts(xs, ys) == seen[3]):
            self._check_batches(xs, ys, steps)
        self.set_rate(lrs, steps)
        out, profile = self.rt.loss_slots(steps * nets), self._profile(steps)
        if self.prepared is None:
            self.prepared = self.rt.prepare(
                self.kernel, (self.grid,), (threads(),), cooperative=True, desc=self.desc,
                L=np.int32(len(self.params)), nets=np.int32(nets), io=self.io,
                B=np.int32(self.batch), steps=np.int32(steps), lr=self.rates,
                cost=np.int32(self.cost), want_stats=np.int32(self.want_stats),
                want_gw=np.int32(self.want_gw), losses=out, barrier=self.barrier,
                profile=profile)
        else:  # what changes from one launch to the next
            self.prepared.set(losses=out, steps=np.int32(steps), lr=self.rates, profile=profile)
        self.prepared.launch()
        if config.CUDA_PROFILE_STEP:  # profiling: each phase's length, read back (a sync)
            self.phase_ns = np.diff(to_host(self.profile)[:1 + 2 * len(self.params) * steps])
        if config.CUDA_BARRIER_POLLS:  # debugging: a barrier that gave up says where
            check_barrier(self.rt, self.barrier, self.grid, len(self.params), steps)
        return out.reshape(nets, steps) if self.grouped else out

    def _check_batches(self, xs, ys, steps):
        """Check each model's batch (shape, dtype, layout); upload their addresses where they
        changed; hold them (an array referenced here cannot be resized in place)."""
        rows, n_in = steps * self.batch, self.sizes[0]
        io = np.empty((len(xs), 2), np.int64)
        for n, (xn, yn) in enumerate(zip(xs, ys)):
            for name, a, shapes, dtype in (
                    ("x", xn, ((rows, n_in), (steps, self.batch, n_in)), self.dtype),
                    ("y", yn, ((rows,), (steps, self.batch)), np.dtype(np.int64))):
                if (tuple(getattr(a, "shape", ())) not in shapes
                        or getattr(a, "dtype", None) != dtype or not a.flags.c_contiguous):
                    raise InputError(f"{name} must be a contiguous {dtype} array of shape "
                                     f"{' or '.join(map(str, shapes))} ({steps} steps of "
                                     f"{self.batch}), got {getattr(a, 'dtype', type(a).__name__)}"
                                     f" {tuple(getattr(a, 'shape', ()))}")
            io[n] = self.rt.address(xn), self.rt.address(yn)
        if not np.array_equal(io, self.io_host):
            self.rt.upload(self.io, io)
            self.io_host = io
        self.checked = (steps, list(xs), list(ys), _layouts(xs, ys))


class Lockstep:
    """The steps of several models of one shape, dtype, activation and cost, made together
    (:func:`fastff.train_many`): one persistent launch a step for all of them where the
    persistent step applies to one of them, each model's own step otherwise. Either way each
    model gets the bits it gets when it trains alone."""

    def __init__(self):
        self.launch = None

    @staticmethod
    def applies(model, batch, rates):
        """Whether the models like ``model`` step together at ``batch`` (config.CUDA_STEP_PATH,
        and the persistent step's limits)."""
        if config.CUDA_STEP_PATH not in ("auto", "persistent") or rates is not None:
            return False  # (an unknown path is refused by each model's own step)
        return why_not_persistent(model.sizes, batch, rates, model.loss) is None

    def step(self, models, xs, ys, lrs, stats):
        """One step of every model in ``models`` on its batch ``xs[i]``, ``ys[i]`` at rate
        ``lrs[i]`` with its StepStats ``stats[i]`` (or None); returns their losses (device
        scalars)."""
        first = models[0]  # the group's models share its shape, activation and cost
        batch = xs[0].shape[0]
        nets = [(m.params, m.plan.workspace(batch), s) for m, s in zip(models, stats)]
        launch = self.launch
        if launch is None or not launch.serves(nets, batch, first.activation, first.loss):
            launch = self.launch = StepLaunch.group(nets, first.activation, batch, first.loss)
        out = launch.run(list(xs), list(ys), list(lrs))
        return [out[n, 0] for n in range(len(models))]


def _layouts(xs, ys):
    """What an array's check rests on and NumPy can change in place: shape, strides, dtype."""
    return [(a.shape, a.strides, a.dtype) for a in (*xs, *ys)]


def _sizes(params):
    """Every layer size of a model with parameters ``params``, input and output included."""
    return [params[0][0].shape[0]] + [W.shape[1] for W, _ in params]


def _wants_gw(stats):
    """Whether a StepStats keeps the sums of dC/dW."""
    return bool(stats is not None and stats.backward and stats.backward[0].weight_grad)


class CUDAPlan(Plan):
    """The CUDA backend's plan: the persistent step where it applies (``whole_step``), the
    layer-by-layer kernels elsewhere."""

    def __init__(self, backend, sizes, dtype):
        super().__init__(backend, sizes, dtype)
        self.launch = self.graph = None
        self.said_float32 = False

    def lockstep_applies(self, model, batch, rates):
        return Lockstep.applies(model, batch, rates)

    def output_and_backward(self, loss, x, y, hs, params, acts, lr, stats, ws):
        """The output layer, the cost and the backward pass fused across layers
        (fused_pass.output_and_backward: the cost in the output layer's forward launch, each
        layer's step 1 in the launch before it) where config.CUDA_FUSED_BACKWARD asks for it,
        else a layer at a time."""
        if not config.CUDA_FUSED_BACKWARD:
            return super().output_and_backward(loss, x, y, hs, params, acts, lr, stats, ws)
        return output_and_backward(loss, x, y, hs, params, acts, lr, stats, ws,
                                   tf32=bool(self.hints.get("tf32")))

    def new_lockstep(self):
        return Lockstep()

    def whole_step(self, params, activation, x, y, lr, stats, rates, loss, layers):
        """Run the whole step as one persistent launch, or as a captured graph of the
        layer-by-layer kernels, and return its loss (a device scalar); or return None where
        the model must run it layer by layer (config.CUDA_STEP_PATH, config.CUDA_GRAPH)."""
        path = config.CUDA_STEP_PATH
        if path not in ("auto", "persistent", "layers"):
            raise InputError(f"config.CUDA_STEP_PATH must be 'auto', 'persistent' or 'layers', "
                             f"got {path!r}")
        batch = x.shape[0]
        reason = ("config.CUDA_STEP_PATH = 'layers'" if path == "layers"
                  else why_not_persistent(self.sizes, batch, rates, loss))
        if reason is not None:
            if path == "persistent":
                raise InputError(f"config.CUDA_STEP_PATH = 'persistent', but {reason}")
            return self._graph_step(params, activation, x, y, lr, stats, rates, loss, layers)
        if self.hints.get("tf32") and not self.said_float32:
            self.said_float32 = True  # once a model: tf32 asks for tensor cores it will not get
            warnings.warn(f"tf32=True: at batch {batch} the step runs as one persistent launch, "
                          "in float32 on CUDA cores (tensor cores serve batches over "
                          f"config.CUDA_STEP_MAX_BATCH = {config.CUDA_STEP_MAX_BATCH}); set "
                          "config.CUDA_STEP_PATH = 'layers' for TF32 products at any batch",
                          stacklevel=4)
        launch = self.launch
        if (launch is None or launch.params is not params
                or not launch.matches(batch, stats, activation, loss)):
            launch = self.launch = StepLaunch(params, activation, batch, self.workspace(batch),
                                              stats, loss)
        return launch.run(x, y, lr)[0]

    def _graph_step(self, params, activation, x, y, lr, stats, rates, loss, layers):
        """The layer-by-layer step through a LayerGraph (None: the model runs it itself, as
        it does once to make every buffer before a graph is captured)."""
        if not config.CUDA_GRAPH or rates is not None:  # rates' step counts change each step
            return None
        ws = self.workspace(x.shape[0])
        graph = self.graph
        if graph is None or not graph.matches(params, x.shape[0], stats, activation, loss, ws):
            self.graph = LayerGraph(params, activation, x.shape[0], ws, stats, loss, layers)
            return None
        return graph.run(x, y, lr)
