"""Greedy layer-wise denoising auto-encoder pre-training (Vincent et al. 2008): the paper's
reference curve of Fig. 11 and its pre-trained sigmoid nets (§5 of the paper).

Each hidden layer in turn, from the bottom, is trained as a denoising auto-encoder on the output
of the layers below it (already pre-trained, used without noise):

* **masking noise**: each input component is set to 0 with probability ``corruption``;
* **encoder** h = f(x~ W + b), the layer itself, run by the fused forward kernel (its
  saturation and moments counted as in training);
* **decoder** r = sigmoid(h W^T + c) with **tied weights**: the fused forward kernel on a
  contiguous copy of W^T, with its own bias c (discarded after pre-training);
* **reconstruction cross-entropy** against the clean input, C = -sum_i t_i log r_i +
  (1 - t_i) log(1 - r_i), computed from the decoder's pre-activations a as softplus(a) - t a
  (no log of a saturated sigmoid), with gradient r - t;
* one SGD step on W, b and c: the fused backward kernel of the decoder gives dC/dh (with the
  old W) and updates c; one more fused update applies W's two gradients at once, the
  encoder's x~^T delta and the decoder's (dC/da)^T h, as one product over the two sets of rows
  stacked (no transposed arithmetic on W, which NumPy does 25x slower than contiguous).

The cross-entropy needs targets in [0, 1]. Inputs in [0, 1] are their own targets; tanh and
softsign outputs, and inputs scaled to [-1, 1], are mapped to (t + 1) / 2 (fastff's choice:
the paper names no reconstruction cost for symmetric units). ReLU units are unbounded and are
refused. Each layer sees the training stream's first ``updates`` minibatches.
"""
import time

import numpy as np

from .. import activations
from ..checks import choose, positive, seed as check_seed
from ..errors import DivergenceError, InputError
from ..kernels.stats import ForwardStats

METHODS = ("dae",)
BOUNDED = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0)}


def check_options(pretrain, updates, corruption, lr):
    """The pre-training arguments of :func:`fastff.train`, checked; returns them normalized."""
    if pretrain is None:
        return None
    choose("pretrain", pretrain, dict.fromkeys(METHODS))
    positive("pretrain_updates", updates, integer=True)
    if isinstance(corruption, (bool, np.bool_)) or not isinstance(corruption, (int, float, np.floating)):
        raise InputError(f"corruption must be a number in [0, 1), got {corruption!r}")
    if not 0 <= float(corruption) < 1:
        raise InputError(f"corruption must be in [0, 1), got {corruption}")
    positive("pretrain_lr", lr)
    return dict(pretrain=pretrain, pretrain_updates=int(updates), corruption=float(corruption),
                pretrain_lr=float(lr))


def _target_map(lo, hi, what):
    """(scale, shift) taking values in [lo, hi] to reconstruction targets in [0, 1]."""
    if lo >= 0 and hi <= 1:
        return 1.0, 0.0
    if lo >= -1 and hi <= 1:
        return 0.5, 0.5
    raise InputError(f"denoising pre-training reconstructs {what} with a cross-entropy, which "
                     f"needs values in [0, 1] or [-1, 1]; they span [{lo:.3g}, {hi:.3g}]")


def pretrain_dae(model, batches, *, updates, lr, corruption=0.25, seed=0, log_every=None,
                 on_log=None, input_range=None):
    """Pre-train every hidden layer of ``model`` in place as a denoising auto-encoder.

    Parameters
    ----------
    model : fastff.MLP
        Its hidden layers are overwritten; the softmax layer is left as initialized.
    batches : callable
        ``batches(k)`` -> (x, y), the k-th training minibatch as arrays of the model's dtype on
        its device (labels are ignored).
    updates : int
        SGD updates per hidden layer.
    lr : float
        Learning rate of the auto-encoders.
    corruption : float
        Probability of masking each input component, in [0, 1).
    seed : int
        Seeds the noise: NumPy's generator on the CPU, CuPy's on a GPU (seeded from this one; the
        same seed gives the same masks on a backend, not across backends).
    log_every : int, optional
        Updates between rows of the returned log (default: updates / 10).
    on_log : callable, optional
        Called with each new row.
    input_range : (float, float), optional
        The range of the data's values, which decides the first layer's reconstruction
        targets (default: the first batch's); every batch must lie in it.

    Returns
    -------
    list of dict
        One row per logged interval and layer (:data:`fastff.record.PRETRAIN_COLUMNS`): the mean
        reconstruction cross-entropy per example over the interval and the encoder's saturation
        and moments counted by the forward kernel.

    Raises
    ------
    DivergenceError
        When the reconstruction cost becomes NaN or inf.
    """
    if model.activation not in BOUNDED:
        raise InputError(f"denoising pre-training reconstructs each layer's input with a "
                         f"cross-entropy, which needs bounded units; {model.activation} is not "
                         f"(use {', '.join(BOUNDED)})")
    positive("updates", updates, integer=True)
    positive("lr", lr)
    check_seed(seed)
    log_every = max(1, updates // 10) if log_every is None else positive("log_every", log_every,
                                                                         integer=True)
    backend, xp = model.backend, model.backend.xp
    rng = np.random.default_rng([seed, 0xDAE])
    rows, t0 = [], time.perf_counter()
    for layer in range(model.n_hidden):
        dae = _AutoEncoder(model, layer, lr, 1.0 - corruption, rng)
        losses = []
        for k in range(updates):
            x = _layer_input(model, batches(k)[0], layer)
            dae.set_targets(x, k, input_range)
            losses.append(dae.update(x))
            if (k + 1) % log_every == 0 or k + 1 == updates:
                dae.check_seen(k + 1 - len(losses), k)
                host = backend.to_host(xp.stack(losses))  # one read from the device
                if not np.isfinite(host).all():
                    bad = int(np.flatnonzero(~np.isfinite(host))[0])
                    raise DivergenceError(
                        f"pre-training layer {layer + 1}: the reconstruction cost became "
                        f"{host[bad]} at update {k + 1 - len(host) + bad + 1} (lr={lr})")
                s = dae.stats.summary()
                row = dict(layer=layer + 1, update=k + 1, examples=(k + 1) * len(x),
                           reconstruction=float(host.mean()), sat_low=s["sat_low"],
                           sat_high=s["sat_high"], mean=s["mean"], std=s["std"],
                           seconds=round(time.perf_counter() - t0, 3))
                rows.append(row)
                if on_log is not None:
                    on_log(row)
                losses.clear()
                dae.stats.reset()
    return rows


def _layer_input(model, x, layer):
    """The input of hidden layer ``layer`` for a batch: the pre-trained layers below, without
    noise."""
    fwd, hints = model.plan.forward, model.plan.hints
    for l in range(layer):
        Wl, bl = model.params[l]
        x = fwd(x, Wl, bl, model.activation, **hints)
    return x


class _AutoEncoder:
    """Hidden layer ``layer`` of ``model`` as a denoising auto-encoder with tied weights: its
    decoder bias, its encoder's statistics, its reconstruction targets and its update."""

    def __init__(self, model, layer, lr, keep, rng):
        self.model, self.layer, self.lr, self.keep, self.rng = model, layer, lr, keep, rng
        xp, dtype = model.backend.xp, model.dtype
        self.W, self.b = model.params[layer]
        n_in, n_out = self.W.shape
        self.c = xp.zeros(n_in, dtype)
        self.stats = ForwardStats(n_out, model.activation, xp=xp)
        self.scratch_bias = xp.zeros(n_out, dtype)
        self.scale = self.shift = None
        # on a GPU the noise is drawn there, and the inputs' range is kept there and read at
        # each log (no transfer per update); on the CPU both as before, batch by batch
        self.device_rng = None if xp is np else xp.random.default_rng(int(rng.integers(2**62)))
        self.seen = None  # device: [lowest, highest] input since the last check

    def set_targets(self, x, k, input_range):
        """The map from this layer's inputs to reconstruction targets in [0, 1], chosen at the
        first batch; every batch of the data must map inside it."""
        model = self.model
        if self.layer == 0:  # every batch must map into [0, 1] as the data's range does
            if self.scale is None:
                first = input_range or (float(x.min()), float(x.max()))
                self.scale, self.shift = _target_map(*first, "the input")
            if self.device_rng is None:
                self._check_range(float(x.min()), float(x.max()), f"training batch {k}")
            else:
                xp = model.backend.xp
                now = xp.stack([x.min(), x.max()])
                self.seen = now if self.seen is None else xp.stack(
                    [xp.minimum(self.seen[0], now[0]), xp.maximum(self.seen[1], now[1])])
        elif self.scale is None:
            self.scale, self.shift = _target_map(*BOUNDED[model.activation],
                                                 f"layer {self.layer}'s {model.activation} units")

    def _check_range(self, lo, hi, what):
        scale, shift = self.scale, self.shift
        if not (0 <= lo * scale + shift and hi * scale + shift <= 1):
            raise InputError(f"{what} spans [{lo:.3g}, {hi:.3g}], outside the "
                             f"[{-shift / scale + 0:g}, {(1 - shift) / scale:g}] its "
                             "reconstruction targets were chosen for")

    def check_seen(self, first, last):
        """On a GPU: the inputs of updates ``first``..``last`` inside the targets' range (one
        read of two numbers)."""
        if self.seen is not None:
            lo, hi = (float(v) for v in self.model.backend.to_host(self.seen))
            self.seen = None
            self._check_range(lo, hi, f"a training batch of updates {first}-{last}")

    def update(self, x):
        """One SGD update on the batch ``x``; returns its reconstruction cost (on the device)."""
        model, W, b, c, lr = self.model, self.W, self.b, self.c, self.lr
        backend, dtype, plan = model.backend, model.dtype, model.plan
        xp, fwd, back, hints = backend.xp, plan.forward, plan.backward, plan.hints
        act = activations.get(model.activation)
        scale, shift = self.scale, self.shift
        target = x * dtype.type(scale) + dtype.type(shift) if scale != 1.0 else x
        if self.device_rng is None:
            mask = backend.to_device(self.rng.random(x.shape) < self.keep, dtype)
        else:
            mask = (self.device_rng.random(x.shape, dtype=np.float32) < self.keep).astype(dtype)
        noisy = x * mask
        h = fwd(noisy, W, b, model.activation, stats=self.stats, **hints)
        Wt = xp.ascontiguousarray(W.T)  # the decoder's weights: a scratch copy of W^T
        a = fwd(h, Wt, c, "linear", **hints)
        # softplus(a) - t a, summed over the inputs, averaged over the batch
        loss = (xp.logaddexp(0, a) - target * a).sum(dtype=np.float64) / len(a)
        grad_a = ((1 / (1 + xp.exp(-a)) - target) / dtype.type(len(a))).astype(dtype)
        # dC/dh = grad_a W with the old W; c is updated (and the scratch copy, unused)
        grad_h = back(h, a, Wt, c, grad_a, "linear", lr, **hints)
        delta = grad_h * act.derivative(h, xp).astype(dtype, copy=False)
        # W's two gradients in one fused update: noisy^T delta (encoder) + grad_a^T h
        # (decoder, transposed), as one product over the rows stacked; the bias gets only
        # the encoder's, so the stacked update goes to a scratch bias
        rows_out = xp.concatenate([delta, h])  # also passed as h: a linear layer ignores it
        back(xp.concatenate([noisy, grad_a]), rows_out, W, self.scratch_bias, rows_out, "linear",
             lr, compute_grad_x=False, **hints)
        b -= dtype.type(lr) * delta.sum(axis=0)
        return loss
