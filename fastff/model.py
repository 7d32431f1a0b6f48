"""The multilayer perceptron: parameters on one device, every step through the kernel registry."""
import operator

import numpy as np

from . import activations, device as devices, losses
from .kernels import get_backend
from .arch import parse_sizes
from .arrays import array_module, like, shared, to_host
from .checks import choose, finite, flag, float_array, labels, positive, seed as check_seed
from .errors import InputError
from .init import INITS, init_weights
from .kernels.contracts import check_stats
from .softmax import softmax
from .kernels.rates import LayerRates, check_hyper, output_curvature
from .kernels.stats import BackwardStats, ForwardStats

DTYPES = {"float32": np.float32, "float64": np.float64}


class StepStats:
    """Per-hidden-layer accumulators filled by :meth:`MLP.step` (one pair per hidden layer)."""

    def __init__(self, model, weight_grad=False):
        self.sizes = list(model.sizes)
        self.activation = model.activation
        xp = model.backend.xp  # the accumulators live where the kernels run
        self.forward = [ForwardStats(n, model.activation, xp=xp) for n in model.sizes[1:-1]]
        self.backward = [BackwardStats(n, xp=xp, weight_grad=weight_grad)
                         for n in model.sizes[1:-1]]
        self._checked = None  # (model key, layers, their versions, arrays held) of the last check

    def reset(self):
        """Zero every accumulator."""
        for s in self.forward + self.backward:
            s.reset()

    def check(self, model):
        """Raise InputError unless these accumulators were made for ``model``'s layers.

        The full check runs once; later calls only confirm that the model, the statistics
        objects and their attributes are still the ones checked (a few microseconds, where the
        full check costs about 70 per step of the paper's net). While checked, the accumulator
        arrays are referenced from here too, which keeps NumPy from resizing them in place.
        """
        key = (tuple(model.sizes), model.activation, model.backend.name)
        layers = (*self.forward, *self.backward)
        if self._checked is not None:
            old_key, old_layers, versions, _ = self._checked
            if (old_key == key and len(old_layers) == len(layers)
                    and all(map(operator.is_, old_layers, layers))
                    and versions == tuple(s.version for s in layers)):
                return self
        if not isinstance(self, StepStats):
            raise InputError(f"stats must come from model.new_stats(), got {type(self).__name__}")
        want = f"{'-'.join(map(str, model.sizes))} {model.activation}"
        have = f"{'-'.join(map(str, self.sizes))} {self.activation}"
        if have != want or len(self.forward) != model.n_hidden or len(self.backward) != model.n_hidden:
            raise InputError(f"these statistics were made for a {have} network, not this "
                             f"{want} one; use model.new_stats()")
        xp = model.backend.xp
        for n, f, b in zip(model.sizes[1:-1], self.forward, self.backward):
            check_stats(f, ForwardStats, n, model.activation, xp)
            check_stats(b, BackwardStats, n, xp=xp)
        self._checked = (key, layers, tuple(s.version for s in layers),
                         tuple(a for s in layers for a in s.arrays()))
        return self

    def summary(self, sizes=None):
        """One dict of scalars per hidden layer (see ForwardStats/BackwardStats.summary).

        ``sizes``, when given, must be the sizes of the network these statistics belong to.
        """
        if sizes is not None and list(sizes) != self.sizes:
            raise InputError(f"these statistics belong to a {'-'.join(map(str, self.sizes))} "
                             f"network, not {list(sizes)}")
        if not self.forward:
            return []
        # every layer's sums in one array: one read-back from a GPU, not tens of scalar reads
        xp = array_module(self.forward[0].total)
        sums = to_host(xp.stack([s for f, b in zip(self.forward, self.backward)
                                 for s in (f.sums(), b.sums())]))
        return [{**f.summary(sums[2 * k]), **b.summary(n_in, sums[2 * k + 1])}
                for k, (f, b, n_in) in enumerate(zip(self.forward, self.backward, self.sizes[:-2]))]

    def _repr_html_(self):
        from .notebook import step_stats_html
        return step_stats_html(self)


class Rates:
    """Per-parameter learning rates for every layer of a model (:mod:`fastff.kernels.rates`),
    made by :meth:`MLP.new_rates` and passed to :meth:`MLP.step`.

    Attributes
    ----------
    method : str
        ``diag_hessian`` or ``grad_variance``.
    layers : list of LayerRates
        One per layer, the softmax layer's included.
    """

    def __init__(self, model, method, damping=None, decay=None):
        method, damping, decay = check_hyper(method, damping, decay)
        self.method, self.damping, self.decay = method, damping, decay
        self.sizes = list(model.sizes)
        xp = model.backend.xp
        self.layers = [LayerRates(n_in, n_out, method, model.dtype, damping, decay, xp)
                       for n_in, n_out in zip(model.sizes[:-1], model.sizes[1:])]

    def check(self, model):
        """Raise InputError unless these rates were made for ``model``'s layers."""
        if not isinstance(self, Rates):
            raise InputError(f"rates must come from model.new_rates(), got {type(self).__name__}")
        if self.sizes != model.sizes or len(self.layers) != len(model.params):
            raise InputError(f"these rates were made for a {'-'.join(map(str, self.sizes))} "
                             f"network, not {'-'.join(map(str, model.sizes))}")
        for layer, (W, _) in zip(self.layers, model.params):
            layer.check(W, model.backend.xp)
            if layer.method != self.method:
                raise InputError("every layer of a Rates must use the same method")
        return self

    def finite(self, xp=np):
        """True when every running estimate is finite (an overflowed one would step its
        parameter by 0 while the loss stays finite)."""
        return all(bool(xp.isfinite(a).all()) for layer in self.layers for a in (layer.W, layer.b))

    def state(self, backend):
        """The running averages and step counts as host arrays (for checkpoints)."""
        out = {"rates_steps": np.array([layer.steps for layer in self.layers], np.int64)}
        for l, layer in enumerate(self.layers):
            out[f"rates_W{l}"] = backend.to_host(layer.W)
            out[f"rates_b{l}"] = backend.to_host(layer.b)
        return out

    def load_state(self, state, backend):
        """Copy :meth:`state` output back; every array must be there, finite, non-negative and
        of the right shape, else nothing changes."""
        steps = np.asarray(state.get("rates_steps", np.zeros(0)))
        if steps.shape != (len(self.layers),) or steps.dtype.kind not in "iu" or (steps < 0).any():
            raise InputError(f"state lacks the {self.method} rates of {len(self.layers)} layers")
        arrays = []
        for l, layer in enumerate(self.layers):
            for name, want in (("W", layer.W), ("b", layer.b)):
                a = np.asarray(state.get(f"rates_{name}{l}", np.zeros(0)))
                if a.shape != tuple(want.shape) or a.dtype.kind != "f" or not np.isfinite(a).all() \
                        or (a < 0).any():
                    raise InputError(f"state['rates_{name}{l}'] must be finite, non-negative "
                                     f"floats of shape {tuple(want.shape)}")
                arrays.append((want, a))
        for want, a in arrays:
            want[...] = backend.to_device(a, want.dtype)
        for layer, t in zip(self.layers, steps):
            layer.steps = int(t)


class MLP:
    """A dense feedforward classifier: hidden layers with one activation, a softmax output.

    Parameters
    ----------
    sizes : list of int or str
        All layer sizes, input and output included: ``[1024, 1000, 1000, 9]`` or
        ``"1024-1000x5-9"``.
    activation : str
        Hidden-unit nonlinearity: ``sigmoid``, ``tanh``, ``softsign`` or ``relu``.
    init : str
        Weight initialization (see :mod:`fastff.init`), applied to every layer including the
        softmax layer (the paper uses one rule "at each layer"); biases start at zero.
    device : str
        ``cpu`` or ``cuda``.
    seed : int
        Seeds the weights; the same seed gives the same weights.
    dtype : str
        ``float32`` (default) or ``float64``.
    kernels : str, optional
        Override the backend: ``reference`` runs the NumPy spec on the CPU (slow; for checks
        and benchmarks).
    loss : str
        The output cost: ``nll`` (the paper's, default) or ``quadratic`` (see
        :mod:`fastff.losses`).
    tf32 : bool
        ``device="cuda"`` and float32 only: form the layer-by-layer path's products (x @ W and
        dC/dx, batches over ``config.CUDA_STEP_MAX_BATCH``) on tensor cores with operands
        rounded to TF32 (10-bit mantissa). Faster at large batches; no longer the paper's
        float32 numbers, so off by default. The weight update stays float32.

    Attributes
    ----------
    backend : fastff.kernels.backend.Backend
        Where the parameters live and the kernels run; every step goes through it.
    plan : fastff.kernels.backend.Plan
        This model's execution plan (:meth:`new_plan`): its workspace, the unchecked kernels
        and the backend's tunables (the trainer switches the CPU's parallel passes on it).

    Examples
    --------
    >>> import numpy as np, fastff
    >>> net = fastff.MLP("20-30x2-3", activation="tanh", init="normalized", seed=0)
    >>> x = np.random.default_rng(0).random((10, 20), dtype=np.float32)
    >>> loss = net.step(x, np.arange(10) % 3, lr=0.1)
    """

    def __init__(self, sizes, activation="tanh", init="normalized", device="cpu", seed=0,
                 dtype="float32", kernels=None, loss="nll", tf32=False):
        self.sizes = parse_sizes(sizes)
        self.activation = activations.get_hidden(activation).name
        choose("init", init, INITS)
        self.init = init
        self.loss = losses.get(loss)
        self.dtype = np.dtype(choose("dtype", str(np.dtype(dtype)) if _is_dtype(dtype) else dtype, DTYPES))
        self.device = devices.resolve(device)
        name = self.device if kernels is None else choose(
            "kernels", kernels, {"reference": "reference", self.device: self.device})
        self.backend = get_backend(name)
        if self.backend.device != self.device:
            raise InputError(f"kernels={name!r} run on the {self.backend.device}, not on "
                             f"device={self.device!r}")
        self.tf32 = self._check_tf32(tf32)
        self.seed = check_seed(seed)
        rng = np.random.default_rng(self.seed)
        self.params = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            W = init_weights(init, n_in, n_out, rng, self.dtype)
            self.params.append((self.backend.copy(W),
                                self.backend.copy(np.zeros(n_out, self.dtype))))
        self.plan = self.new_plan()

    def _check_tf32(self, tf32):
        tf32 = flag("tf32", tf32)
        if tf32 and (self.backend.device != "cuda" or not self.backend.can("tf32")):
            raise InputError(f"tf32=True runs products on NVIDIA tensor cores: it needs "
                             f"device='cuda' (and the CUDA kernels), not {self.backend.name!r}")
        if tf32:
            self.backend.check_tf32(self.dtype, self.backend.runtime())
        return tf32

    def new_plan(self):
        """A new execution plan of this model on its backend (:meth:`Backend.plan`): the
        unchecked kernels bound to its workspace and tunables. The model keeps one as
        :attr:`plan`; :meth:`step_unchecked` and :meth:`forward_all` run through it."""
        plan = self.backend.plan(self.sizes, self.dtype)
        if self.tf32:
            plan.hints["tf32"] = True
        return plan

    def copy(self):
        """An independent copy: the same network with its own parameters."""
        net = object.__new__(MLP)
        net.__dict__.update(self.__dict__)
        net.params = [(self.backend.copy(W), self.backend.copy(b)) for W, b in self.params]
        net.plan = net.new_plan()
        return net

    # -- properties ---------------------------------------------------------------------------
    @property
    def layer_activations(self):
        """The activation of every layer: the hidden one, then ``linear`` under the softmax."""
        return [self.activation] * (len(self.sizes) - 2) + ["linear"]

    @property
    def n_hidden(self):
        return len(self.sizes) - 2

    def __repr__(self):
        return (f"MLP({'-'.join(map(str, self.sizes))}, activation={self.activation!r}, "
                f"init={self.init!r}, device={self.device!r}, dtype={self.dtype.name!r}"
                + (f", loss={self.loss!r}" if self.loss != "nll" else "")
                + (", tf32=True)" if self.tf32 else ")"))

    def _repr_html_(self):
        from .notebook import model_html
        return model_html(self)

    # -- input checks -------------------------------------------------------------------------
    def check_x(self, x):
        """``x`` checked (2-D floats, the input width, finite) and on this model's device as a
        contiguous array of its dtype."""
        float_array("x", x, 2)
        if x.shape[1] != self.sizes[0]:
            raise InputError(f"x has {x.shape[1]} features but the network expects {self.sizes[0]}")
        finite("x", x)
        with np.errstate(over="ignore"):
            cast = self.backend.to_device(x, self.dtype)
        if cast.dtype != x.dtype:  # float64 values beyond float32's range become inf
            finite(f"x as {self.dtype.name}", cast)
        return cast

    def check_y(self, y, n_rows):
        """Class ids checked (integers in range, one per row) and on this model's device."""
        labels(y, n_rows, self.sizes[-1])
        return self.backend.to_device(y, np.int64)

    # -- inference ----------------------------------------------------------------------------
    def hidden(self, x, stats=None):
        """All layer outputs for a batch: ``[h1, ..., hL, logits]``."""
        x = self.check_x(x)
        return self.forward_all(x, stats)

    def forward_all(self, x, stats=None, outs=None, layers=None):
        """Every layer's output for ``x``, checked already (:meth:`check_x`): ``[h1, ..., hL,
        logits]`` (with ``layers``, the first ``layers`` only), into ``outs`` when given, with
        the hidden layers' statistics accumulated into ``stats`` (a StepStats of this model)
        when given. Unchecked: the hot path."""
        fwd, hints = self.plan.forward, self.plan.hints
        hs = []
        for l, ((W, b), act) in enumerate(zip(self.params[:layers], self.layer_activations)):
            st = stats.forward[l] if stats is not None and l < self.n_hidden else None
            out = outs[l] if outs is not None else None
            x = fwd(x, W, b, act, out=out, stats=st, **hints)
            hs.append(x)
        return hs

    def logits(self, x, chunk=1024):
        """The softmax layer's input for every row of ``x`` (evaluated in chunks of rows), on
        the host (a CPU tensor for a tensor ``x``: see :meth:`forward`)."""
        return like(x, self.backend.to_host(self._logits(self.check_x(shared("x", x)), chunk)))

    def _logits(self, x, chunk=1024):
        """The logits of a checked ``x``, where the model's arrays are."""
        return self.backend.xp.concatenate([self.forward_all(x[i:i + chunk])[-1]
                                            for i in range(0, x.shape[0], chunk)])

    def forward(self, x):
        """Class probabilities, shape (batch, n_classes), on the host.

        ``x`` may be any array that exports DLPack (a PyTorch tensor): it is read without a
        copy (:func:`fastff.arrays.from_foreign`) and the probabilities come back as an array
        of its library, on the host (a CPU tensor)."""
        logits = self.logits(shared("x", x))
        return like(x, softmax(logits.astype(np.float64)).astype(self.dtype))

    def predict(self, x):
        """The most probable class of every row (of ``x``'s library, as :meth:`forward`)."""
        return like(x, self.logits(shared("x", x)).argmax(axis=1))

    def error(self, x, y):
        """Fraction of rows whose predicted class differs from ``y``."""
        return float((~self._correct(shared("x", x), shared("y", y))).mean())

    def correct(self, x, y):
        """Whether each row's predicted class is ``y``'s: a boolean array on the host (the
        paired outcomes two models' comparison on one test set needs; of ``x``'s library, as
        :meth:`forward`)."""
        return like(x, self._correct(shared("x", x), shared("y", y)))

    def _correct(self, x, y):
        x = self.check_x(x)
        labels(y, x.shape[0], self.sizes[-1])
        # compared where the logits are: the host reads back one bool a row
        hit = self._logits(x).argmax(axis=1) == self.backend.to_device(y, np.int64)
        return self.backend.to_host(hit)

    # -- PyTorch ------------------------------------------------------------------------------
    def to_torch(self, device=None):
        """This network as a PyTorch ``nn.Sequential`` (:mod:`fastff.pytorch`): its Linear
        layers hold copies of the weights (transposed to PyTorch's layout, every bit kept) with
        the hidden activation between them (``nn.Softsign`` for softsign). It returns the
        logits; the model's :meth:`forward` is ``torch.softmax(module(x), 1)``.

        Parameters
        ----------
        device : str, optional
            Where the module's parameters go (a PyTorch device); default: the model's device.

        Returns
        -------
        torch.nn.Sequential
        """
        from . import pytorch
        host = [(self.backend.to_host(W), self.backend.to_host(b)) for W, b in self.params]
        return pytorch.build(self.sizes, self.activation, host, self.dtype.name,
                             self.device if device is None else device)

    @classmethod
    def from_torch(cls, module, device=None, init="normalized", loss="nll"):
        """A fastff network with the weights of a plain PyTorch MLP (copied; every bit kept).

        Parameters
        ----------
        module : torch.nn.Sequential
            Linear layers with biases and one hidden activation (``nn.Sigmoid``, ``nn.Tanh``,
            ``nn.Softsign`` or ``nn.ReLU``) between them; an ``nn.Flatten`` first and an
            ``nn.Softmax``/``nn.LogSoftmax`` last are accepted. Anything else is refused with
            the layer fastff cannot represent (:func:`fastff.pytorch.read`).
        device : str, optional
            ``cpu`` or ``cuda``; default: where the module's parameters are.
        init : str
            Recorded as the network's initialization (its weights are the module's).
        loss : str
            The output cost its :meth:`step` takes (``nll``: ``nn.CrossEntropyLoss``).

        Returns
        -------
        MLP
            Of the module's sizes, activation and dtype (float32 or float64).
        """
        from . import pytorch
        sizes, activation, params, dtype, where = pytorch.read(module)
        net = cls(sizes, activation or "tanh", init=init, device=where if device is None
                  else device, dtype=dtype, loss=loss)
        net.params = [(net.backend.copy(W), net.backend.copy(b)) for W, b in params]
        net.plan = net.new_plan()
        return net

    # -- training -----------------------------------------------------------------------------
    def new_stats(self, weight_grad=False):
        """Fresh per-layer accumulators to pass to :meth:`step`.

        ``weight_grad=True`` also measures dC/dW, at the cost of one more product per weight.
        """
        return StepStats(self, weight_grad)

    def new_rates(self, method, damping=None, decay=None):
        """Per-parameter learning rates to pass to :meth:`step` (:mod:`fastff.kernels.rates`).

        Parameters
        ----------
        method : str
            ``diag_hessian`` (LeCun et al. 1998b) or ``grad_variance``.
        damping, decay : float, optional
            Defaults: ``config.SECOND_ORDER_DAMPING[method]``, ``config.SECOND_ORDER_DECAY``.
        """
        return Rates(self, method, damping, decay)

    def step(self, x, y, lr, stats=None, rates=None):
        """One SGD step on a minibatch; returns the batch's mean cost (negative log-likelihood,
        or the quadratic cost for ``loss="quadratic"``).

        Parameters
        ----------
        x : ndarray (batch, n_in)
            Or any array that exports DLPack (a PyTorch tensor), read without a copy.
        y : ndarray (batch,) of class ids
        lr : float
            Learning rate (the paper's epsilon): theta <- theta - lr * mean gradient.
        stats : StepStats, optional
            From :meth:`new_stats`; the kernels accumulate per-layer statistics into it.
        rates : Rates, optional
            From :meth:`new_rates`: each parameter steps by ``lr`` divided by its own curvature
            or gradient-noise estimate, which the step also updates. None: plain SGD.

        Returns
        -------
        float
            The loss, read from the device (a synchronization on a GPU; the trainer keeps it on
            the device and reads it only when it logs).
        """
        x = self.check_x(shared("x", x))
        y = self.check_y(shared("y", y), x.shape[0])
        positive("lr", lr)
        if stats is not None:
            if not isinstance(stats, StepStats):
                raise InputError(f"stats must come from model.new_stats(), got {type(stats).__name__}")
            stats.check(self)
        if rates is not None:
            if not isinstance(rates, Rates):
                raise InputError(f"rates must come from model.new_rates(), got {type(rates).__name__}")
            rates.check(self)
            if rates.method == "grad_variance" and x.shape[0] < 2:
                raise InputError("grad_variance estimates a variance over the batch and needs "
                                 f"at least 2 rows, got {x.shape[0]}")
        return float(self.step_unchecked(x, y, lr, stats, rates))

    def step_unchecked(self, x, y, lr, stats=None, rates=None):
        """One SGD step on a batch checked already (:meth:`check_x`, :meth:`check_y`) and
        statistics and rates made for this model: :meth:`step` without its checks. Returns
        the loss as a device scalar (on a GPU it is not read back)."""
        plan = self.plan
        if plan.whole_step is not None:
            loss = plan.whole_step(self.params, self.activation, x, y, lr, stats, rates, self.loss,
                                   self._layers_step)
            if loss is not None:
                return loss
        return self._layers_step(x, y, lr, stats, rates)

    def _layers_step(self, x, y, lr, stats=None, rates=None):
        """The step layer by layer, one kernel call after another."""
        plan = self.plan
        ws = plan.workspace(x.shape[0])
        if rates is not None:
            hs = self.forward_all(x, stats, ws["h"])
            loss, grad = plan.costs[self.loss](hs[-1], y, ws["grad_z"])
            self._second_order_backward(x, hs, grad, lr, stats, rates, ws)
            return loss
        hs = self.forward_all(x, stats, ws["h"], layers=self.n_hidden)  # the plan runs the top
        layer_stats = [stats.backward[l] if stats is not None and l < self.n_hidden else None
                       for l in range(len(self.params))]
        return plan.output_and_backward(self.loss, x, y, hs, self.params,
                                        self.layer_activations, lr, layer_stats, ws)

    def _second_order_backward(self, x, hs, grad, lr, stats, rates, ws):
        """The backward pass with per-parameter rates: the curvature of ``diag_hessian`` goes
        down beside the gradient, from the softmax's Gauss-Newton diagonal."""
        plan = self.plan
        hessian = rates.method == "diag_hessian"
        curv = output_curvature(hs[-1], self.loss, self.backend.xp) if hessian else None
        curvs = plan.curvature(x.shape[0]) if hessian else None
        acts = self.layer_activations
        for l in range(len(self.params) - 1, -1, -1):
            W, b = self.params[l]
            inp = hs[l - 1] if l > 0 else x
            st = stats.backward[l] if stats is not None and l < self.n_hidden else None
            grad, curv = plan.second_order(
                inp, hs[l], W, b, grad, acts[l], lr, rates.layers[l], curv_h=curv,
                grad_x=ws["g"][l] if l > 0 else None,
                curv_x=curvs[l] if hessian and l > 0 else None, stats=st, compute_grad_x=l > 0,
                delta=ws["delta"][l], **plan.hints)

    # -- state --------------------------------------------------------------------------------
    def state(self):
        """Parameters and description as a dict of NumPy arrays (for checkpoints)."""
        out = {"sizes": np.array(self.sizes)}
        for l, (W, b) in enumerate(self.params):
            out[f"W{l}"] = self.backend.to_host(W)
            out[f"b{l}"] = self.backend.to_host(b)
        return out

    def load_state(self, state):
        """Copy parameters from :meth:`state` output into this model.

        Every array must be there with the model's shapes and hold finite values; on any error
        the model is left unchanged.
        """
        if not hasattr(state, "keys"):
            raise InputError(f"state must be a dict of arrays (model.state()), got {type(state).__name__}")
        want = {"sizes": (len(self.sizes),)}
        for l, (W, b) in enumerate(self.params):
            want[f"W{l}"], want[f"b{l}"] = tuple(W.shape), tuple(b.shape)
        missing = [k for k in want if k not in state]
        if missing:
            raise InputError(f"state lacks {', '.join(missing)} (a {'-'.join(map(str, self.sizes))} "
                             "network needs sizes, W0.., b0..)")
        sizes = np.asarray(state["sizes"])
        if sizes.shape != want["sizes"] or list(sizes) != self.sizes:
            raise InputError(f"state has sizes {sizes.tolist()}, model has {self.sizes}")
        arrays = {}
        for k, shape in want.items():
            a = np.asarray(state[k])
            if k == "sizes":
                continue
            if a.shape != shape or a.dtype.kind != "f":
                raise InputError(f"state[{k!r}] is {a.dtype} of shape {a.shape}; the model needs "
                                 f"floats of shape {shape}")
            if not np.isfinite(a).all():
                raise InputError(f"state[{k!r}] holds NaN or inf")
            arrays[k] = a
        for l, (W, b) in enumerate(self.params):
            W[...] = self.backend.to_device(arrays[f"W{l}"], self.dtype)
            b[...] = self.backend.to_device(arrays[f"b{l}"], self.dtype)


def _is_dtype(d):
    try:
        np.dtype(d)
        return True
    except TypeError:
        return False
