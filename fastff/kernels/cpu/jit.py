"""How every CPU kernel is compiled, and the scalar helpers they share.

* :data:`JIT`: the options of every ``@njit`` here. fastmath without 'nnan'/'ninf', so that NaN
  and inf stay visible to the statistics and checks; compiled code cached on disk.
* :func:`parallel_and_serial`: one body, two dispatchers. A pass that runs in parallel after the
  register tiles must run serially after a BLAS call, whose threads still spin on the cores for
  a while and would fight a second thread team (measured 4x slower, benchmarks/NOTES.md
  "Numba v2"). Numba runs ``prange`` as ``range`` in a serial compile, so the body is written once.
* :func:`like` and :func:`fast_tanh`: constants and tanh in the float type of their argument,
  so float32 code never promotes to float64.
"""
import math
import types as pytypes

import numpy as np
from numba import njit, types
from numba.extending import overload

JIT = dict(fastmath={"nsz", "arcp", "contract", "afn", "reassoc"}, error_model="numpy", cache=True,
           nogil=True)


def parallel_and_serial(body):
    """(parallel, serial) dispatchers compiled from ``body``, a function whose chunk loop is a
    ``prange``. The serial twin gets its own qualified name: Numba's on-disk cache is keyed by
    it, and the two compiled versions must not overwrite each other."""
    serial = pytypes.FunctionType(body.__code__, body.__globals__, body.__name__ + "_serial",
                                  body.__defaults__, body.__closure__)
    serial.__qualname__ = body.__qualname__ + "_serial"
    serial.__doc__ = body.__doc__
    return njit(parallel=True, **JIT)(body), njit(**JIT)(serial)


def like(v, c):
    """The constant ``c`` in the float type of ``v`` (compiled code only)."""


@overload(like)
def _like_impl(v, c):
    if isinstance(v, types.Float) and v.bitwidth == 32:
        return lambda v, c: np.float32(c)
    return lambda v, c: np.float64(c)


def fast_tanh(v):
    """tanh: a branch-free rational approximation in float32 (abs. error ~3e-7), libm in float64."""


# Rational minimax approximation of tanh on [-7.905, 7.905] (the form Eigen uses); beyond that
# range tanh is 1 to float32 precision. It vectorizes, unlike a scalar libm call.
_T_CLAMP = np.float32(7.90531110763549805)
_A1, _A3, _A5 = np.float32(4.89352455891786e-03), np.float32(6.37261928875436e-04), np.float32(1.48572235717979e-05)
_A7, _A9, _A11 = np.float32(5.12229709037114e-08), np.float32(-8.60467152213735e-11), np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0, _B2, _B4, _B6 = np.float32(4.89352518554385e-03), np.float32(2.26843463243900e-03), np.float32(1.18534705686654e-04), np.float32(1.19825839466702e-06)


@overload(fast_tanh)
def _fast_tanh_impl(v):
    if isinstance(v, types.Float) and v.bitwidth == 32:
        def tanh32(v):
            x = min(max(v, -_T_CLAMP), _T_CLAMP)
            x2 = x * x
            p = x2 * _A13 + _A11
            p = x2 * p + _A9
            p = x2 * p + _A7
            p = x2 * p + _A5
            p = x2 * p + _A3
            p = x2 * p + _A1
            p = x * p
            q = x2 * _B6 + _B4
            q = x2 * q + _B2
            q = x2 * q + _B0
            return p / q
        return tanh32
    return lambda v: math.tanh(v)
