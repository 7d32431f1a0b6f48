"""Backend objects: everything the model, the trainer and the monitor need from a device.

One :class:`Backend` per kind of kernels, registered in :mod:`fastff.kernels` (the one
registry). A backend gives:

* ``xp``: its array module (NumPy, or CuPy for ``cuda``), for the few array operations outside
  the kernels (statistics accumulators, the monitor's measurements);
* the kernels with the contracts of :mod:`fastff.kernels.reference`, checked
  (``dense_forward``, ``dense_backward_sgd``, ``dense_backward_second_order``, ``softmax_nll``,
  ``softmax_quadratic``) and unchecked for the hot path (``forward_unchecked``,
  ``backward_unchecked``, ``second_order_unchecked``, ``softmax_nll_unchecked``,
  ``softmax_quadratic_unchecked``);
* :meth:`Backend.plan`: the per-model execution plan (its workspace and the backend's own
  tunables, such as the CPU's software prefetch), through which :class:`fastff.MLP` steps;
* host <-> device transfer (:meth:`to_device`, :meth:`to_host`), and the arrays a model owns
  (:meth:`empty`, :meth:`copy`: on the host they start on a cache line, :mod:`.memory`).

``import fastff`` never imports CuPy: a backend's array module is looked up on first use.
"""
import importlib

import numpy as np

from .. import config
from ..arrays import to_host
from ..losses import KERNELS
from . import memory


class Plan:
    """How one model runs on a backend: the unchecked kernels bound to the model's workspace
    and tunables. :class:`fastff.MLP` calls only ``workspace``, ``forward`` and
    ``output_and_backward`` (with per-parameter rates, one of ``costs`` and ``second_order``) in
    its step."""

    def __init__(self, backend, sizes, dtype):
        self.backend, self.sizes, self.dtype = backend, list(sizes), np.dtype(dtype)
        self._workspace = {}
        # The kernels the step calls directly (no Python layer per call; measured: a wrapper
        # per call cost 1 us, 12 us a step), with the contract's arguments by position and the
        # rest by name, ``**hints`` last:
        # forward(x, W, b, activation, out=, stats=, **hints);
        # backward(x, h, W, b, grad_h, activation, lr, grad_x=, stats=, compute_grad_x=,
        #          delta=, **hints); and one of ``costs``.
        self.forward = backend.forward_unchecked
        self.backward = backend.backward_unchecked
        # second_order(x, h, W, b, grad_h, activation, lr, rates, curv_h=, grad_x=, curv_x=,
        #              stats=, compute_grad_x=, delta=, **hints) -> (grad_x, curv_x)
        self.second_order = backend.second_order_unchecked
        # the output costs, by name (fastff.losses): cost(z, y, grad_z=None) -> (loss, grad_z)
        self.costs = {name: getattr(backend, f"{op}_unchecked") for name, op in KERNELS.items()}
        self.hints = {}  # the backend's per-model tunables, by name (the CPU's: prefetch, parallel)
        self.parallel = True

    # whole_step(params, activation, x, y, lr, stats, rates, loss, layers) -> the loss, or None
    # where the model runs the step layer by layer itself (``layers(x, y, lr, stats, rates)``
    # does that, for a backend that records it): a backend that runs a whole step at once (CUDA's
    # persistent step and its captured graph, fastff/kernels/cuda/step.py) sets it.
    whole_step = None

    # Whether the backend's small-batch passes have serial twins that give the same numbers and
    # compile faster (fastff/training/warmup.py); without them, set_parallel changes nothing.
    serial_twins = False

    def set_parallel(self, parallel):
        """Run the small-batch passes in parallel (True) or as their serial twins, which give the
        same numbers bit for bit and compile faster (fastff.train starts with them)."""
        self.parallel = bool(parallel)

    def lockstep_applies(self, model, batch, rates):
        """Whether nets like ``model`` (this plan's) step together at ``batch`` in one launch
        (a backend that can ``lockstep``, :meth:`Backend.can`); here never."""
        return False

    def new_lockstep(self):
        """A new stepper of several nets like this plan's in one launch (its ``step(models, xs,
        ys, lrs, stats)`` returns their losses), for a backend that can ``lockstep``."""
        raise NotImplementedError(f"the {self.backend.name} kernels cannot step nets in lockstep")

    def output_and_backward(self, loss, x, y, hs, params, acts, lr, stats, ws):
        """The output layer of a model whose hidden layers gave ``hs`` (``x`` the input), its
        cost for labels ``y`` and the plain-SGD backward pass, top layer first: ``forward`` of
        the output layer into ``ws["h"][-1]``, ``costs[loss]``, then ``backward`` a layer at a
        time, each layer's dC/dx the gradient of the one below. ``stats``: each layer's
        BackwardStats or None; ``ws``: the :meth:`workspace` of the batch. Returns the loss.
        (CUDA's plan runs the cost in the output layer's forward launch and each layer's step 1
        in the launch before it.)"""
        (W, b), top = params[-1], len(params) - 1
        z = self.forward(hs[-1] if hs else x, W, b, acts[top], out=ws["h"][top], **self.hints)
        hs = [*hs, z]
        value, grad = self.costs[loss](z, y, ws["grad_z"])
        for l in range(top, -1, -1):
            W, b = params[l]
            grad = self.backward(hs[l - 1] if l > 0 else x, hs[l], W, b, grad, acts[l], lr,
                                 grad_x=ws["g"][l] if l > 0 else None, stats=stats[l],
                                 compute_grad_x=l > 0, delta=ws["delta"][l], **self.hints)
        return value

    def workspace(self, batch):
        """Activations h, gradients dC/dx and deltas of every layer, and the cost's gradient
        grad_z, for one batch size (the last size asked for is kept: training uses one)."""
        ws = self._workspace.get(batch)
        if ws is None:
            empty = self.backend.empty
            ws = dict(h=[empty((batch, n), self.dtype) for n in self.sizes[1:]],
                      g=[empty((batch, n), self.dtype) for n in self.sizes[:-1]],
                      delta=[empty((batch, n), self.dtype) for n in self.sizes[1:]],
                      grad_z=empty((batch, self.sizes[-1]), self.dtype))
            self._workspace = {batch: ws}
        return ws

    def curvature(self, batch):
        """The curvature arrays of ``diag_hessian`` (fastff.kernels.rates) for one batch size:
        one (batch, n) array per layer input below the softmax's, made on first use."""
        ws = self.workspace(batch)
        if "curv" not in ws:
            empty = self.backend.empty
            ws["curv"] = [empty((batch, n), self.dtype) for n in self.sizes[:-1]]
        return ws["curv"]



class CPUPlan(Plan):
    """The CPU's plan: a ``delta`` workspace for the fused backward pass, software prefetch only
    for models whose weights do not stay in the cores' caches between steps
    (config.CPU_PREFETCH_MIN_BYTES, benchmarks/NOTES.md), and the choice between the parallel
    small-batch passes and their serial twins."""

    def __init__(self, backend, sizes, dtype):
        super().__init__(backend, sizes, dtype)
        weight_bytes = sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) * self.dtype.itemsize
        self.prefetch = weight_bytes > config.CPU_PREFETCH_MIN_BYTES
        self.set_parallel(True)

    serial_twins = True

    def set_parallel(self, parallel):
        super().set_parallel(parallel)
        self.hints = dict(prefetch=self.prefetch, parallel=self.parallel)


class Backend:
    """One kind of kernels on one device.

    Parameters
    ----------
    name : str
        Registry name: ``cpu``, ``reference`` or ``cuda``.
    device : str
        The device its arrays live on: ``cpu`` or ``cuda``.
    module : str
        The module holding its kernels (imported on first use).
    array_module : str
        ``numpy`` or ``cupy`` (imported on first use).
    plan_class : type or str
        Its :class:`Plan`, or where to find it (``"module:Class"``, imported on the first plan,
        so that registering a backend loads none of its code).
    loss_on_device : bool
        The step's loss comes back as a device array: reading it costs a synchronization, so
        the trainer checks it for NaN when it logs, not after every step.
    """

    OPS = ("dense_forward", "dense_backward_sgd", "dense_backward_second_order", "softmax_nll",
           "softmax_quadratic", "forward_unchecked", "backward_unchecked",
           "second_order_unchecked", "softmax_nll_unchecked", "softmax_quadratic_unchecked")
    # What a backend's kernels may be able to do beyond the ops (its module's CAPABILITIES):
    # ``lockstep``, several nets stepped by one launch (fastff.train_many, through the plan:
    # Plan.new_lockstep); ``device_data``, a dataset's batches made and kept where the kernels
    # run; ``graphs``, a step captured and replayed; ``tf32``, products on tensor cores. The
    # module's operations that come with one, and it.
    CAPABILITIES = ("lockstep", "device_data", "graphs", "tf32")
    CAPABILITY_OPS = {"check_tf32": "tf32", "render_shapeset_batch": "device_data"}

    def __init__(self, name, device, module, array_module="numpy", plan_class=Plan,
                 loss_on_device=False):
        self.name, self.device, self.loss_on_device = name, device, loss_on_device
        self._module_name, self._xp_name, self._plan_class = module, array_module, plan_class
        self._module = self._xp = None

    def __repr__(self):
        return f"<fastff backend {self.name!r} on {self.device}>"

    @property
    def module_name(self):
        """The module holding its kernels (without importing it)."""
        return self._module_name

    @property
    def module(self):
        if self._module is None:
            self._module = importlib.import_module(self._module_name)
        return self._module

    @property
    def xp(self):
        """The array module of this backend's arrays."""
        if self._xp is None:
            self._xp = importlib.import_module(self._xp_name)
        return self._xp

    def __getattr__(self, op):  # the kernels: backend.dense_forward(...), ...
        if op in Backend.OPS:
            return getattr(self.module, op)
        if op in Backend.CAPABILITY_OPS:
            if not self.can(Backend.CAPABILITY_OPS[op]):
                raise AttributeError(f"the {self.name} kernels cannot "
                                     f"{Backend.CAPABILITY_OPS[op]}: no {op}")
            return getattr(self.module, op)
        raise AttributeError(op)

    def can(self, capability):
        """Whether this backend's kernels have ``capability`` (one of :attr:`CAPABILITIES`);
        callers ask this, never the module's name."""
        if capability not in Backend.CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; "
                             f"known: {', '.join(Backend.CAPABILITIES)}")
        return capability in getattr(self.module, "CAPABILITIES", ())

    def runtime(self):
        """Where this backend's kernels launch, for one that has a runtime (CUDA's: devices,
        streams, free memory; :class:`fastff.kernels.cuda.Runtime`), made on first use; None
        for kernels that run where Python does."""
        make = getattr(self.module, "runtime", None)
        return make() if make is not None else None

    def plan(self, sizes, dtype):
        """The execution plan of a model of ``sizes`` and ``dtype`` on this backend."""
        if isinstance(self._plan_class, str):
            module, _, name = self._plan_class.partition(":")
            self._plan_class = getattr(importlib.import_module(module), name)
        return self._plan_class(self, sizes, dtype)

    def to_device(self, a, dtype=None):
        """``a`` as a contiguous array of this backend (a no-op for one that already is)."""
        if self._xp_name == "numpy":
            return np.ascontiguousarray(to_host(a), dtype=dtype)  # a CuPy array comes home
        xp = self.xp
        return xp.ascontiguousarray(xp.asarray(a, dtype=dtype))

    def empty(self, shape, dtype):
        """A new uninitialized array of this backend, for a model's parameters and workspaces
        (on the host it starts on a cache line: :func:`fastff.kernels.memory.empty`)."""
        return memory.empty(shape, dtype, self.xp)

    def copy(self, a, dtype=None):
        """A new array of this backend holding ``a`` (as ``dtype``), laid out as :meth:`empty`
        lays out its arrays."""
        a = self.to_device(a, dtype)
        out = self.empty(a.shape, a.dtype)
        out[...] = a
        return out

    def to_host(self, a):
        """``a`` as a NumPy array (a copy from the GPU; the array itself on the host)."""
        return to_host(a)
