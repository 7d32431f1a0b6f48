"""fastff: compiled kernels for deep feedforward networks, built around Glorot & Bengio (2010).

>>> import fastff
>>> run = fastff.train("1000x5", dataset="shapeset", activation="tanh", init="normalized",
...                    updates=1000, progress=False)                       # doctest: +SKIP
"""
from ._version import __version__
from . import activations, arch, baselines, config, data, export, init, kernels, monitor, report
from .errors import DataError, DeviceError, DivergenceError, FastffError, InputError, RecordError
from .init import init_weights
from .model import MLP
from .monitor import Measurement, Monitor, Stats, measure
from .training import Interrupted, Run, pretrain, train, train_many
from .sweeps import sweep
from .reproduction import reproduce

__all__ = ["train", "train_many", "sweep", "reproduce", "Run", "MLP", "measure", "Monitor", "Measurement", "Stats", "data", "kernels", "init",
           "baselines", "pretrain", "init_weights", "activations",
           "arch", "config", "FastffError", "InputError", "DeviceError", "DivergenceError",
           "DataError", "RecordError", "Interrupted", "training", "sweeps", "reproduction",
           "__version__"]
