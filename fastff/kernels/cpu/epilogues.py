"""The element-wise ends of a layer's passes, fused: bias, activation and statistics after the
forward product; derivative, bias update and delta sums before the backward product.

Every pass works on chunks of ``chunk`` columns (``config.CPU_COL_CHUNK``), a fixed number of
them whatever the thread count: each chunk owns its columns, and the per-chunk histograms are
merged in chunk order, so the same inputs give the same bits with 1 thread or 2.

The statistics travel as one named tuple (:class:`ForwardStatArgs`, :class:`DeltaStatArgs`),
built from the caller's ForwardStats / BackwardStats by :func:`forward_stat_args` and
:func:`delta_stat_args`; ``on=False`` with placeholder arrays when none are asked for.

Within a tile, the switch on the activation code sits outside the loops so each loop
vectorizes, and every inner loop runs over a slice from index 0: a loop over range(j0, j1) does
not vectorize (Numba cannot rule out a negative index and keeps the wraparound branch; measured
12x slower, benchmarks/NOTES.md "Numba v3").
"""
from collections import namedtuple

import numpy as np
from numba import njit, prange

from ...activations import RELU, SIGMOID, SOFTSIGN, TANH
from .jit import JIT, fast_tanh, like, parallel_and_serial

ForwardStatArgs = namedtuple("ForwardStatArgs", "on low high sat_low sat_high total total_sq hist "
                                                "rows hist_lo hist_scale")
DeltaStatArgs = namedtuple("DeltaStatArgs", "on total total_sq counts")

_NO_I64 = np.zeros(1, np.int64)
_NO_F64 = np.zeros(1, np.float64)
_NO_COUNTS = np.zeros(2, np.int64)
_SLAB = 1 << 30  # rows whose saturation counts an int32 holds


def forward_stat_args(stats, dtype):
    """The ForwardStats ``stats`` (or None) as the compiled epilogue takes it."""
    dt = np.dtype(dtype).type
    if stats is None:
        return ForwardStatArgs(False, dt(0), dt(0), _NO_I64, _NO_I64, _NO_F64, _NO_F64, _NO_I64,
                               _NO_I64, 0.0, 0.0)
    return ForwardStatArgs(True, dt(stats.low), dt(stats.high), stats.sat_low, stats.sat_high,
                           stats.total, stats.total_sq, stats.hist, stats.rows,
                           float(stats.hist_lo), stats.bins / (stats.hist_hi - stats.hist_lo))


def delta_stat_args(stats):
    """The BackwardStats ``stats`` (or None) as the compiled delta pass takes it."""
    if stats is None:
        return DeltaStatArgs(False, _NO_F64, _NO_F64, _NO_COUNTS)
    return DeltaStatArgs(True, stats.delta_total, stats.delta_total_sq, stats.counts)


# -- tiles: rows [r0, r1) x columns [j0, j1) ---------------------------------------------------
@njit(inline="always", **JIT)
def activate_tile(s, b, act, r0, r1, j0, j1):
    """s[r, j] <- f(s[r, j] + b[j]) in place."""
    n = j1 - j0
    bb = b[j0:j1]
    for r in range(r0, r1):
        row = s[r, j0:j1]
        if act == TANH:
            for j in range(n):
                row[j] = fast_tanh(row[j] + bb[j])
        elif act == SIGMOID:
            for j in range(n):
                half = like(row[j], 0.5)
                row[j] = half * fast_tanh(half * (row[j] + bb[j])) + half
        elif act == SOFTSIGN:
            for j in range(n):
                v = row[j] + bb[j]
                row[j] = v / (like(v, 1.0) + abs(v))
        elif act == RELU:
            for j in range(n):
                v = row[j] + bb[j]
                row[j] = max(v, like(v, 0.0))
        else:
            for j in range(n):
                row[j] = row[j] + bb[j]


@njit(inline="always", **JIT)
def stats_tile(h, r0, r1, j0, j1, st, hist, slab=_SLAB):
    """Add the ForwardStats of h[r0:r1, j0:j1] (fastff.kernels.stats) to ``st``, its histogram
    to ``hist`` (a chunk's own, merged later in chunk order); ``slab`` rows at a time."""
    bins = hist.shape[0]
    n = j1 - j0
    lo_count, hi_count = st.sat_low[j0:j1], st.sat_high[j0:j1]
    tot, tot_sq = st.total[j0:j1], st.total_sq[j0:j1]
    low, high = st.low, st.high
    top = np.float64(bins - 1)
    # int32 where the values allow it: AVX2 converts float64 to int32 in vectors, not to int64,
    # and compares float32 into 32-bit lanes; the saturation counts go to the int64 totals
    # every slab of rows, before an int32 could overflow
    idx = np.empty(n, np.int32)
    lo_slab = np.empty(n, np.int32)
    hi_slab = np.empty(n, np.int32)
    local = np.zeros((4, bins), np.int64)
    for s0 in range(r0, r1, slab):
        lo_slab[:] = 0
        hi_slab[:] = 0
        for r in range(s0, min(r1, s0 + slab)):
            row = h[r, j0:j1]
            for j in range(n):  # branch-free: vectorizes
                v = row[j]
                lo_slab[j] += np.int32(v <= low)
                hi_slab[j] += np.int32(v >= high)
                v64 = np.float64(v)
                tot[j] += v64
                tot_sq[j] += v64 * v64
            # bin index in float64 as reference.hist_bin_index: clamping to [0, bins - 1] sends
            # outside values to the end bins, NaN to -1 (not counted)
            for j in range(n):
                t = (np.float64(row[j]) - st.hist_lo) * st.hist_scale
                t = top if t > top else t
                t = 0.0 if t < 0.0 else t
                idx[j] = np.int32(t) if t == t else np.int32(-1)
            for j in range(n):  # the scatter, into 4 interleaved copies: no chain on one counter
                if idx[j] >= 0:
                    local[j & 3, idx[j]] += 1
        for j in range(n):
            lo_count[j] += lo_slab[j]
            hi_count[j] += hi_slab[j]
    for k in range(4):
        for i in range(bins):
            hist[i] += local[k, i]


@njit(**JIT)
def delta_tile(grad_h, h, delta, act, r0, r1, j0, j1):
    """delta = grad_h * f'(h), with f' expressed from the output h."""
    n = j1 - j0
    for r in range(r0, r1):
        g, y, d = grad_h[r, j0:j1], h[r, j0:j1], delta[r, j0:j1]
        if act == TANH:
            for j in range(n):
                d[j] = g[j] * (like(y[j], 1.0) - y[j] * y[j])
        elif act == SIGMOID:
            for j in range(n):
                d[j] = g[j] * (y[j] * (like(y[j], 1.0) - y[j]))
        elif act == SOFTSIGN:
            for j in range(n):
                t = like(y[j], 1.0) - abs(y[j])
                d[j] = g[j] * (t * t)
        elif act == RELU:
            for j in range(n):
                d[j] = g[j] if y[j] > 0 else g[j] * like(y[j], 0.0)
        else:
            for j in range(n):
                d[j] = g[j]


@njit(inline="always", **JIT)
def delta_moments(delta, j0, j1, total, total_sq):
    """Add the per-unit sums of delta[:, j0:j1] and of its squares (float64), rows in order."""
    n = j1 - j0
    tot, tot_sq = total[j0:j1], total_sq[j0:j1]
    for r in range(delta.shape[0]):
        d = delta[r, j0:j1]
        for j in range(n):
            v = np.float64(d[j])
            tot[j] += v
            tot_sq[j] += v * v


@njit(inline="always", **JIT)
def sum_blocks(parts, out, j0, j1):
    """out[:, j0:j1] = the sum of parts[k, :, j0:j1] over the row blocks k, in block order."""
    for r in range(out.shape[0]):
        o = out[r, j0:j1]
        p = parts[0, r, j0:j1]
        for j in range(o.shape[0]):
            o[j] = p[j]
        for k in range(1, parts.shape[0]):
            p = parts[k, r, j0:j1]
            for j in range(o.shape[0]):
                o[j] += p[j]


# -- whole passes: each chunk's work is one serial call, so that the parallel loop that runs
# the chunks is small (Numba's parallel compile grows with the loop body: 3.6 s for the forward
# epilogue written inline, benchmarks/NOTES.md "Compile time"); the loop is written once and
# jitted parallel and serial.
@njit(**JIT)
def forward_epilogue_columns(out, blocks, b, act, j0, j1, st, hist):
    """Columns [j0, j1) of the forward epilogue: out = f(sum of blocks + b) (out = f(out + b)
    when ``blocks`` has no block), its statistics added to ``st`` and its histogram to ``hist``."""
    if blocks.shape[0] > 0:
        sum_blocks(blocks, out, j0, j1)
    activate_tile(out, b, act, 0, out.shape[0], j0, j1)
    if st.on:
        stats_tile(out, 0, out.shape[0], j0, j1, st, hist)


@njit(**JIT)
def _merge_counts(parts, st, B):
    """Add the per-chunk histograms (integers: exact in any order) and count the rows."""
    if st.on:
        for c in range(parts.shape[0]):
            for i in range(st.hist.shape[0]):
                st.hist[i] += parts[c, i]
        st.rows[0] += B


def _forward_epilogue(out, blocks, b, act, chunk, st):
    """The forward epilogue over chunks of ``chunk`` columns (forward_epilogue_columns)."""
    n_out = out.shape[1]
    n_chunks = (n_out + chunk - 1) // chunk
    parts = np.zeros((n_chunks, st.hist.shape[0]), np.int64)
    for c in prange(n_chunks):
        forward_epilogue_columns(out, blocks, b, act, c * chunk, min(n_out, c * chunk + chunk), st,
                                 parts[c])
    _merge_counts(parts, st, out.shape[0])


forward_epilogue, forward_epilogue_serial = parallel_and_serial(_forward_epilogue)


@njit(**JIT)
def delta_bias_columns(grad_h, h, delta, b, act, lr, j0, j1, st):
    """delta = grad_h f'(h), b -= lr * (column sums of delta) and the delta sums when asked,
    for the columns [j0, j1)."""
    B = h.shape[0]
    n = j1 - j0
    delta_tile(grad_h, h, delta, act, 0, B, j0, j1)
    acc = np.zeros(n, b.dtype)
    for r in range(B):  # rows in order: the same sums as a loop down each column
        d = delta[r, j0:j1]
        for j in range(n):
            acc[j] += d[j]
    bb = b[j0:j1]
    for j in range(n):
        bb[j] -= lr * acc[j]
    if st.on:
        delta_moments(delta, j0, j1, st.total, st.total_sq)


def _delta_bias(grad_h, h, delta, b, act, lr, chunk, st):
    """delta = grad_h * f'(h); b -= lr * delta.sum(0); per-unit delta sums when asked."""
    n_out = h.shape[1]
    for c in prange((n_out + chunk - 1) // chunk):
        delta_bias_columns(grad_h, h, delta, b, act, lr, c * chunk,
                           min(n_out, c * chunk + chunk), st)
    if st.on:
        st.counts[0] += h.shape[0]  # rows
        st.counts[1] += 1  # steps


delta_bias, delta_bias_serial = parallel_and_serial(_delta_bias)


@njit(**JIT)
def grad_w_moments(x, delta):
    """Sum and sum of squares of G = x.T @ delta without forming G (float64).

    sum(G) = sum_r (sum_i x[r, i]) (sum_j delta[r, j]) and sum(G**2) = <x x^T, delta delta^T>,
    two batch x batch Gram matrices: 2 B^2 (n_in + n_out) operations instead of a pass over W.
    """
    B = x.shape[0]
    gx = np.zeros((B, B))
    gd = np.zeros((B, B))
    sx = np.zeros(B)
    sd = np.zeros(B)
    for r in range(B):
        xr, dr = x[r], delta[r]
        for i in range(xr.shape[0]):
            sx[r] += np.float64(xr[i])
        for j in range(dr.shape[0]):
            sd[r] += np.float64(dr[j])
        for q in range(r + 1):
            xq, dq = x[q], delta[q]
            t = 0.0
            for i in range(xr.shape[0]):
                t += np.float64(xr[i]) * np.float64(xq[i])
            gx[r, q] = t
            t = 0.0
            for j in range(dr.shape[0]):
                t += np.float64(dr[j]) * np.float64(dq[j])
            gd[r, q] = t
    total, total_sq = 0.0, 0.0
    for r in range(B):
        total += sx[r] * sd[r]
        total_sq += gx[r, r] * gd[r, r]
        for q in range(r):
            total_sq += 2.0 * gx[r, q] * gd[r, q]
    return total, total_sq
