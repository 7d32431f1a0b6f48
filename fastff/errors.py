"""Exceptions raised by fastff. All derive from :class:`FastffError`."""


class FastffError(Exception):
    """Base class of every error fastff raises on purpose."""


class InputError(FastffError, ValueError):
    """An argument has the wrong shape, dtype, value or name."""


class DeviceError(FastffError, RuntimeError):
    """The requested device cannot be used (missing CuPy, no GPU, wrong array type)."""


class DivergenceError(FastffError, FloatingPointError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""


class DataError(FastffError, OSError):
    """A dataset is missing, corrupted or in an unexpected layout."""


class RecordError(InputError):
    """A run directory cannot be used: a file is damaged, from another run, or in the way."""
