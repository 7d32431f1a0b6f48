"""The arguments of a kernel launch: by name, in the order of the kernel's parameters in its
``.cu`` source (:func:`named_args`), in CUDA's form (:func:`kernel_params`), and prepared once
for a launch repeated every step (:class:`Prepared`, :class:`PackedArgs`).
"""
import ctypes

import numpy as np

from ...arrays import on_device
from ...errors import DeviceError
from .compiler import parameters


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


def named_args(name, fields):
    """The arguments of kernel ``name`` in its parameters' order, from ``fields`` by name; a
    missing or an extra name is a DeviceError."""
    params = parameters()[name.split("<", 1)[0]]
    try:
        args = tuple(fields[p] for _, p in params)
    except KeyError as missing:
        raise DeviceError(f"a launch of {name} leaves out its parameter {missing}") from None
    if len(fields) != len(params):
        extra = sorted(set(fields) - {p for _, p in params})
        raise DeviceError(f"a launch of {name} names {extra}, which it does not take")
    return args


class Prepared:
    """A launch whose arguments were named, checked and put in order once
    (:meth:`Runtime.prepare`): :meth:`set` changes the fields a step changes, :meth:`launch`
    launches. The persistent step launches one every step; building its 14 arguments anew
    cost more host time than the rest of the step's Python (benchmarks/NOTES.md)."""

    def __init__(self, rt, name, grid, block, cooperative, fields):
        self.rt, self.name, self.cooperative = rt, name, cooperative
        self.grid, self.block = tuple(grid), tuple(block)
        self.args = list(named_args(name, fields))
        self.slot = {p: i for i, (_, p) in enumerate(parameters()[name.split("<", 1)[0]])}

    def set(self, **fields):
        """Change the named arguments of the next launches."""
        for field, value in fields.items():
            if field not in self.slot:
                raise DeviceError(f"{self.name} takes no parameter {field!r}")
            self.args[self.slot[field]] = value

    def launch(self):
        self.rt.launch(self.name, self.grid, self.block, tuple(self.args), self.cooperative)


class PackedArgs:
    """The arguments of a prepared launch in CUDA's form (:func:`kernel_params`), made once;
    :meth:`update` replaces one in place."""

    def __init__(self, args, address):
        self.address = address
        self.params, self.values = kernel_params(args, address)
        self.values = list(self.values)

    def update(self, i, value):
        params, values = kernel_params((value,), self.address)
        self.values[i] = values[0]  # kept alive: params[i] points to it
        self.params[i] = params[0]
