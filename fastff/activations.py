"""The hidden-unit nonlinearities of Glorot & Bengio (2010), their §3.

Each activation knows its NumPy forward, its derivative *expressed from the output* h = f(s)
(so the backward pass never needs s), its output range, and its saturation rule. Saturation
thresholds and histogram ranges live in :mod:`fastff.config`.

=========  ===================  ==================  ==========================================
name       f(s)                 f'(s) from h        saturated (low / high)
=========  ===================  ==================  ==========================================
sigmoid    1 / (1 + e^-s)       h (1 - h)           h <= 0.01 / h >= 0.99
tanh       tanh(s)              1 - h^2             h <= -0.99 / h >= 0.99
softsign   s / (1 + |s|)        (1 - |h|)^2         h <= -0.99 / h >= 0.99
relu       max(s, 0)            1 if h > 0 else 0   h == 0 ("dead" for that example) / never
linear     s                    1                   never (the softmax layer's affine part)
=========  ===================  ==================  ==========================================
"""
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from . import config
from .checks import choose


@dataclass(frozen=True)
class Activation:
    """One nonlinearity. ``code`` is the integer the compiled kernels switch on."""

    name: str
    code: int
    output_range: tuple

    def forward(self, s, xp=np):
        """h = f(s), elementwise, in the dtype of ``s``."""
        return _FORWARD[self.name](s, xp)

    def derivative(self, h, xp=np):
        """f'(s) computed from the output h = f(s)."""
        return _DERIVATIVE[self.name](h, xp)

    @property
    def thresholds(self):
        """(low, high): h <= low is saturated-low, h >= high saturated-high (config.SATURATION)."""
        return config.SATURATION[self.name]

    @property
    def hist_range(self):
        """(lo, hi) of the fixed-bin activation histogram (config.HIST_RANGE)."""
        return config.HIST_RANGE[self.name]


def _sigmoid(s, xp):
    if xp is np:
        return expit(s)  # stable for large |s|, keeps the dtype
    return 1 / (1 + xp.exp(-s))


_FORWARD = {
    "linear": lambda s, xp: s.copy(),
    "sigmoid": _sigmoid,
    "tanh": lambda s, xp: xp.tanh(s),
    "softsign": lambda s, xp: s / (1 + xp.abs(s)),
    "relu": lambda s, xp: xp.maximum(s, 0),
}

_DERIVATIVE = {
    "linear": lambda h, xp: xp.ones_like(h),
    "sigmoid": lambda h, xp: h * (1 - h),
    "tanh": lambda h, xp: 1 - h * h,
    "softsign": lambda h, xp: (1 - xp.abs(h)) ** 2,
    "relu": lambda h, xp: (h > 0).astype(h.dtype),
}

# Codes shared with the compiled kernels (fastff/kernels/cpu/ switches on them).
LINEAR, SIGMOID, TANH, SOFTSIGN, RELU = 0, 1, 2, 3, 4

ACTIVATIONS = {
    "linear": Activation("linear", LINEAR, (-np.inf, np.inf)),
    "sigmoid": Activation("sigmoid", SIGMOID, (0.0, 1.0)),
    "tanh": Activation("tanh", TANH, (-1.0, 1.0)),
    "softsign": Activation("softsign", SOFTSIGN, (-1.0, 1.0)),
    "relu": Activation("relu", RELU, (0.0, np.inf)),
}

#: Each activation's integer code, by name: what the CPU and CUDA kernels switch on.
CODES = {name: a.code for name, a in ACTIVATIONS.items()}

#: The activations a hidden layer may use (the paper's three, plus relu).
HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "softsign", "relu")


def get(name):
    """Return the :class:`Activation` called ``name``; unknown names list the valid ones."""
    if isinstance(name, Activation):
        return name
    return choose("activation", name, ACTIVATIONS)


def get_hidden(name):
    """Like :func:`get`, restricted to :data:`HIDDEN_ACTIVATIONS`."""
    return choose("hidden activation", name, {n: ACTIVATIONS[n] for n in HIDDEN_ACTIVATIONS})
