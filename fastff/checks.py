"""Argument validation shared by the public functions: clear errors, never a silent wrong answer."""
import numpy as np

from .arrays import array_module

from .errors import InputError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def choose(kind, name, valid):
    """Return ``valid[name]`` or raise an error that lists the valid names."""
    if isinstance(name, str) and name in valid:
        return valid[name]
    raise InputError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")


def float_array(name, a, ndim, dtype=None):
    """Check that ``a`` is a float32/float64 array with ``ndim`` dimensions (and ``dtype``)."""
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise InputError(f"{name} must be an array, got {type(a).__name__}")
    if a.ndim != ndim:
        raise InputError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    if a.dtype not in FLOAT_DTYPES:
        hint = (" (scale integer pixels to floats first, e.g. x.astype('float32') / 255)"
                if a.dtype.kind in "iub" else "")
        raise InputError(f"{name} must be float32 or float64, got {a.dtype}{hint}")
    if dtype is not None and a.dtype != dtype:
        raise InputError(f"{name} has dtype {a.dtype} but the weights are {dtype}")
    if a.size == 0:
        raise InputError(f"{name} is empty (shape {tuple(a.shape)})")
    return a


def finite(name, a, xp=None):
    """Raise if ``a`` holds NaN or inf."""
    if xp is None:
        xp = np if type(a) is np.ndarray else array_module(a)
    if not bool(xp.isfinite(a).all()):
        raise InputError(f"{name} contains NaN or inf")


def writable_c_contiguous(name, a):
    """Arrays updated in place must be C-contiguous and writable (no hidden copies)."""
    if not a.flags.c_contiguous:
        raise InputError(f"{name} is updated in place and must be C-contiguous; "
                         f"pass np.ascontiguousarray({name})")
    if not getattr(a.flags, 'writeable', True):
        raise InputError(f"{name} is updated in place and must be writable")


def dense_shapes(x, W, b, h=None, grad_h=None):
    """Check the shapes of one dense layer's arrays against W of shape (n_in, n_out)."""
    n_in, n_out = W.shape
    if x.shape[1] != n_in:
        raise InputError(f"x has {x.shape[1]} features but W expects {n_in} (W is {tuple(W.shape)})")
    if b.shape != (n_out,):
        raise InputError(f"b must have shape ({n_out},), got {tuple(b.shape)}")
    for name, a in (("h", h), ("grad_h", grad_h)):
        if a is not None and a.shape != (x.shape[0], n_out):
            raise InputError(f"{name} must have shape ({x.shape[0]}, {n_out}), got {tuple(a.shape)}")


def labels(y, n_rows, n_classes, xp=None):
    """Check integer class labels in [0, n_classes) with one label per row."""
    if not hasattr(y, "dtype") or y.ndim != 1:
        raise InputError(f"y must be a 1-D integer array, got {getattr(y, 'shape', type(y).__name__)}")
    if y.dtype.kind not in "iu":
        raise InputError(f"y must hold integer class ids, got dtype {y.dtype}")
    if y.shape[0] != n_rows:
        raise InputError(f"y has {y.shape[0]} labels for {n_rows} rows")
    if n_rows and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise InputError(f"labels must lie in [0, {n_classes}), got range "
                         f"[{int(y.min())}, {int(y.max())}]")


def positive(name, value, integer=False):
    """Raise unless ``value`` is a finite number > 0 (an int when ``integer``)."""
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if not ok or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise InputError(f"{name} must be {kind}, got {value!r}")
    return value


def flag(name, value):
    """``value`` as a bool; raise unless it is True or False (NumPy's bool too)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def seed(value):
    """A seed: a non-negative integer (NumPy's generators refuse negative ones)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise InputError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)
