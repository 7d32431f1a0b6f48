"""Fused Numba kernels for the CPU, with the contracts of :mod:`fastff.kernels.reference`.

How the work is laid out (numbers measured on a 2-core AVX-512 machine, benchmarks/NOTES.md):

* Small batches (<= ``config.CPU_SMALL_BATCH_MAX`` rows, the paper's batch of 10): the step is
  bound by streaming the weights, so fastff uses its own register-blocked loops. The forward
  pass splits the output columns into chunks; each task accumulates its (batch x chunk) tile of
  s = x @ W, then adds the bias, applies f and counts statistics while the tile is still in L1.
  The backward pass walks W once, row by row: for each row it forms dC/dx with the *old* row,
  then the weight-gradient row g = x[:, i] @ delta and applies W[i] -= lr * g while the row is
  in L1; the full weight gradient is never materialized.
* Large batches: the matrix products go to BLAS (np.dot inside @njit calls it) and the epilogue
  (bias, activation, statistics; derivative and update) is one fused parallel pass.

Determinism: work is split into a fixed number of chunks that does not depend on the thread
count, every chunk writes only its own columns or rows, and the per-chunk partial histograms and
sums are merged in chunk order. Same inputs, same bits.
"""
import math

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .. import activations, config
from ..errors import InputError
from ..activations import LINEAR, RELU, SIGMOID, SOFTSIGN, TANH
from .contracts import backward_args, forward_args, second_order_args, softmax_args
from .simd import (VEC_REGISTERS, prefetch, tile_coefs, tile_grad_update, tile_hsum_store,
                   tile_lanes, tile_rank1, tile_store, tile_update, tile_zeros)

# fastmath without 'nnan'/'ninf': NaN and inf must stay visible to the statistics and checks.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
_JIT = dict(fastmath=_FAST, error_model="numpy", cache=True, nogil=True)


# ---------------------------------------------------------------------------------------------
# Scalar helpers, specialized on float32 / float64 so that float32 code never promotes.
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Tile epilogues: activation, derivative, statistics over rows [r0, r1) x columns [j0, j1).
# The switch on the activation code sits outside the loops so each loop vectorizes. Every inner
# loop runs over a slice from index 0: a loop over range(j0, j1) does not vectorize (Numba
# cannot rule out a negative index and keeps the wraparound branch; measured 12x slower).
# ---------------------------------------------------------------------------------------------
@njit(**_JIT)
def _activate_tile(s, b, act, r0, r1, j0, j1):
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


@njit(**_JIT)
def _stats_tile(h, r0, r1, j0, j1, low, high, sat_low, sat_high, total, total_sq, hist,
                hist_lo, hist_scale):
    """Accumulate the ForwardStats of h[r0:r1, j0:j1] (see fastff.kernels.stats)."""
    bins = hist.shape[0]
    n = j1 - j0
    lo_count, hi_count = sat_low[j0:j1], sat_high[j0:j1]
    tot, tot_sq = total[j0:j1], total_sq[j0:j1]
    top = np.float64(bins - 1)
    idx = np.empty(n, np.int64)
    local = np.zeros((4, bins), np.int64)
    for r in range(r0, r1):
        row = h[r, j0:j1]
        for j in range(n):  # branch-free: vectorizes
            v = row[j]
            lo_count[j] += np.int64(v <= low)
            hi_count[j] += np.int64(v >= high)
            v64 = np.float64(v)
            tot[j] += v64
            tot_sq[j] += v64 * v64
        # bin index in float64 as reference.hist_bin_index: clamping to [0, bins - 1] sends
        # outside values to the end bins, NaN to -1 (not counted)
        for j in range(n):
            t = (np.float64(row[j]) - hist_lo) * hist_scale
            t = top if t > top else t
            t = 0.0 if t < 0.0 else t
            idx[j] = np.int64(t) if t == t else -1
        for j in range(n):  # the scatter, into 4 interleaved copies: no chain on one counter
            if idx[j] >= 0:
                local[j & 3, idx[j]] += 1
    for k in range(4):
        for i in range(bins):
            hist[i] += local[k, i]


@njit(**_JIT)
def _delta_tile(grad_h, h, delta, act, r0, r1, j0, j1):
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


# ---------------------------------------------------------------------------------------------
# Small-batch matrix loops, built from register tiles (fastff.kernels.simd). A tile's shape is a
# compile-time constant, so each loop below dispatches on the row count to a fixed set of tile
# shapes, sized to the 32 vector registers of AVX-512 (accumulators plus a few temporaries).
# ---------------------------------------------------------------------------------------------
# Forward: tiles of up to 6 rows of x by 4 vectors of columns (24 accumulators); a batch of more
# rows runs in balanced tiles (10 -> 5 + 5) over the same strip of W, then in L1/L2.
# The tile shapes follow the vector register file, an ISA property: AVX-512 has 32 registers,
# AVX2 16, where a 6 x 4 tile would keep its 24 partial sums in memory (benchmarks/NOTES.md,
# "AVX2"). With 16: 4 rows x 3 vectors, 12 partial sums, 3 loads of W and a broadcast.
_FWD_TILE_ROWS = 6 if VEC_REGISTERS >= 32 else 4
_FWD_TILE_VECS = 4 if VEC_REGISTERS >= 32 else 3


@njit(**_JIT)
def _strip(x, r0, W, s, i0, i1, j, n, acc, ahead, width):
    """s[r0 + r, j:j+n] = x[r0 + r, i0:i1] @ W[i0:i1, j:j+n] for the rows of the tile ``acc``.

    With ``ahead`` > 0, row i + ahead of the strip (past i1: the next strip's rows from i0) is
    prefetched while row i is used: a strip walks W with a one-row stride, one to four cache
    lines per row, which the hardware prefetchers do not follow (measured from DRAM: 187 us per
    1000x1000 layer without, 79 us with).
    """
    lanes = tile_lanes(acc)
    n_out = W.shape[1]
    for i in range(i0, i1):
        if ahead > 0:
            ip, jp = i + ahead, j
            if ip >= i1:
                ip, jp = ip - (i1 - i0), j + width
            if ip < i1 and jp < n_out:
                for v in range(0, min(width, n_out - jp), lanes):
                    prefetch(W, ip, jp + v)
        acc = tile_rank1(acc, x, r0, W, i, j, n)
    tile_store(acc, s, r0, j, n)


@njit(**_JIT)
def _strip_tile(x, r0, W, s, i0, i1, j, n, ahead, width, h, tall, short):
    """_strip with a row tile of ``h`` rows, the length of ``tall`` or of ``short``."""
    if h == len(tall):
        _strip(x, r0, W, s, i0, i1, j, n, tile_zeros(W, tall, _FWD_TILE_VECS), ahead, width)
    else:
        _strip(x, r0, W, s, i0, i1, j, n, tile_zeros(W, short, _FWD_TILE_VECS), ahead, width)


@njit(**_JIT)
def _gemm_rows(x, W, s, i0, i1, ahead, tall, short):
    """s = x[:, i0:i1] @ W[i0:i1]: the partial product of one block of rows of W, one strip of
    _FWD_TILE_VECS vectors of columns at a time, the batch split into balanced row tiles of
    as many rows as ``tall`` or ``short`` has items (tuples whose types carry the heights, so
    that each batch size compiles only its own tiles; :func:`_row_tiles`). The first row tile
    of a strip prefetches; the others find the strip in cache."""
    B = x.shape[0]
    n_out = W.shape[1]
    width = _FWD_TILE_VECS * tile_lanes(tile_zeros(W, 1, 1))
    n_tiles = (B + _FWD_TILE_ROWS - 1) // _FWD_TILE_ROWS
    for j in range(0, n_out, width):
        r0 = 0
        for t in range(n_tiles):
            h = (B - r0 + n_tiles - t - 1) // (n_tiles - t)  # balanced: 10 rows -> 5 + 5 (or 4 + 3 + 3)
            a = ahead if t == 0 else 0
            if n_out - j >= width:  # a full strip: plain loads (masked ones are slow on AVX2)
                _strip_tile(x, r0, W, s, i0, i1, j, None, a, width, h, tall, short)
            else:
                _strip_tile(x, r0, W, s, i0, i1, j, n_out - j, a, width, h, tall, short)
            r0 += h


def _height(n):
    """A tuple of n items: a tile height carried in a type (see simd._literal)."""
    return (0,) * n


def _row_tiles(batch):
    """(tall, short) as heights: the balanced row tiles _gemm_rows splits a batch into."""
    n_tiles = -(-batch // _FWD_TILE_ROWS)
    return _height(-(-batch // n_tiles)), _height(batch // n_tiles)


@njit(**_JIT)
def _sum_blocks(parts, out, j0, j1):
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


# Backward: the whole batch is one tile (dC/dx needs the old W and the update needs every row,
# so the batch is not split) by _BWD_W_ROWS rows of W, with their SGD coefficients built once
# (tile_coefs) rather than loaded for every column vector. Measured per 1000x1000 layer:
# AVX-512 111 us with two rows of W, against 116-125 us with the coefficients loaded and 140 us
# one row at a time; AVX2 (16 registers) 320-332 us with two rows, 393-413 us with one: the
# coefficients that do not fit in registers become memory operands of the FMAs.
_BWD_MAX_ROWS = 16
_BWD_W_ROWS = 2


@njit(**_JIT)
def _dot_update(x, delta, W, gx, lr, i0, i1, tile, ahead):
    """Rows i0..i1 of W, _BWD_W_ROWS at a time: gx[:, i] = delta @ W[i] with the old row, then
    W[i] -= lr * x[:, i] @ delta. Full vectors first, then a masked tail; the rows ``ahead`` on
    are prefetched (measured from DRAM: 150 -> 126 us per layer)."""
    n, K = W.shape[1], W.shape[0]
    lanes = tile_lanes(tile)
    n_full = n - n % lanes
    for i in range(i0, i1, _BWD_W_ROWS):
        nv = min(_BWD_W_ROWS, i1 - i)
        c = tile_coefs(tile, x, i, nv, lr)
        acc = tile
        j = 0
        if nv == _BWD_W_ROWS:
            for j in range(0, n_full, lanes):
                if i + ahead + _BWD_W_ROWS - 1 < K:
                    for v in range(_BWD_W_ROWS):
                        prefetch(W, i + ahead + v, j)
                acc = tile_grad_update(acc, delta, W, i, None, j, None, c)
            j = n_full
        for jm in range(j, n, lanes):  # masked: the last columns, or a lone last row of W
            acc = tile_grad_update(acc, delta, W, i, nv, jm, n - jm, c)
        tile_hsum_store(acc, gx, i, nv)


@njit(**_JIT)
def _update(x, delta, W, lr, i0, i1, tile, ahead):
    """_dot_update without dC/dx (the first layer): W[i] -= lr * x[:, i] @ delta.

    A twin rather than a flag inside _dot_update: with both loops in one function the dC/dx
    loop compiled to slower code (126 against 110 us per 1000x1000 layer, measured)."""
    n, K = W.shape[1], W.shape[0]
    lanes = tile_lanes(tile)
    n_full = n - n % lanes
    for i in range(i0, i1, _BWD_W_ROWS):
        nv = min(_BWD_W_ROWS, i1 - i)
        c = tile_coefs(tile, x, i, nv, lr)
        j = 0
        if nv == _BWD_W_ROWS:
            for j in range(0, n_full, lanes):
                if i + ahead + _BWD_W_ROWS - 1 < K:
                    for v in range(_BWD_W_ROWS):
                        prefetch(W, i + ahead + v, j)
                tile_update(delta, W, i, None, j, None, c)
            j = n_full
        for jm in range(j, n, lanes):
            tile_update(delta, W, i, nv, jm, n - jm, c)


@njit(**_JIT)
def _grad_update(x, delta, W, gx, lr, i0, i1, want_gx, tile, ahead):
    if want_gx:
        _dot_update(x, delta, W, gx, lr, i0, i1, tile, ahead)
    else:
        _update(x, delta, W, lr, i0, i1, tile, ahead)


@njit(**_JIT)
def _grad_w_moments(x, delta):
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


# ---------------------------------------------------------------------------------------------
# Drivers.
# ---------------------------------------------------------------------------------------------
@njit(parallel=True, **_JIT)
def _forward(x, W, b, act, out, blocks, block, chunk, ahead, tall, short, want_stats, low,
             high, sat_low, sat_high, total, total_sq, hist, rows, hist_lo, hist_scale):
    """Small batch. Pass 1, over blocks of rows of W: blocks[k] = x[:, rows k] @ W[rows k].
    Pass 2, over chunks of columns: the sum of the blocks, bias, f and statistics, fused.

    Splitting W by rows, as the backward pass does (same blocks, same static schedule), keeps
    each row of W on one core from one pass to the next. Splitting it by columns here made the
    two cores trade every line of W back and forth: a step took 2.05 ms instead of 1.30 ms.
    """
    B = x.shape[0]
    n_in, n_out = W.shape
    for k in prange(blocks.shape[0]):
        i0 = k * block
        _gemm_rows(x, W, blocks[k], i0, min(n_in, i0 + block), ahead, tall, short)
    n_chunks = (n_out + chunk - 1) // chunk
    parts = np.zeros((n_chunks if want_stats else 1, hist.shape[0]), np.int64)
    for c in prange(n_chunks):
        j0 = c * chunk
        j1 = min(n_out, j0 + chunk)
        _sum_blocks(blocks, out, j0, j1)
        _activate_tile(out, b, act, 0, B, j0, j1)
        if want_stats:
            _stats_tile(out, 0, B, j0, j1, low, high, sat_low, sat_high, total, total_sq,
                        parts[c], hist_lo, hist_scale)
    if want_stats:
        _merge_hist(parts, hist, rows, B)


@njit(**_JIT)
def _merge_hist(parts, hist, rows, B):
    """Add the per-chunk histograms (integers: exact in any order) and count the rows."""
    for c in range(parts.shape[0]):
        for i in range(hist.shape[0]):
            hist[i] += parts[c, i]
    rows[0] += B


@njit(**_JIT)
def _forward_epilogue(out, b, act, chunk, want_stats, low, high, sat_low, sat_high, total,
                      total_sq, hist, rows, hist_lo, hist_scale):
    """The forward epilogue alone, serial: after a BLAS product, whose threads still spin on
    the cores for a while, a second parallel team would only fight them (measured 4x slower)."""
    B, n_out = out.shape
    for c in range((n_out + chunk - 1) // chunk):
        j0 = c * chunk
        j1 = min(n_out, j0 + chunk)
        _activate_tile(out, b, act, 0, B, j0, j1)
        if want_stats:
            _stats_tile(out, 0, B, j0, j1, low, high, sat_low, sat_high, total, total_sq,
                        hist, hist_lo, hist_scale)
    if want_stats:
        rows[0] += B


@njit(**_JIT)
def _delta_bias_tiles(grad_h, h, delta, b, act, lr, j0, j1, want_stats, d_total, d_total_sq):
    B = h.shape[0]
    n = j1 - j0
    _delta_tile(grad_h, h, delta, act, 0, B, j0, j1)
    acc = np.zeros(n, b.dtype)
    for r in range(B):  # rows in order: the same sums as a loop down each column
        d = delta[r, j0:j1]
        for j in range(n):
            acc[j] += d[j]
    bb = b[j0:j1]
    for j in range(n):
        bb[j] -= lr * acc[j]
    if want_stats:
        _delta_moments(delta, j0, j1, d_total, d_total_sq)


@njit(**_JIT)
def _delta_moments(delta, j0, j1, d_total, d_total_sq):
    """Add the per-unit sums of delta[:, j0:j1] and of its squares (float64), rows in order."""
    n = j1 - j0
    tot, tot_sq = d_total[j0:j1], d_total_sq[j0:j1]
    for r in range(delta.shape[0]):
        d = delta[r, j0:j1]
        for j in range(n):
            v = np.float64(d[j])
            tot[j] += v
            tot_sq[j] += v * v


@njit(**_JIT)
def _delta_bias_serial(grad_h, h, delta, b, act, lr, chunk, want_stats, d_total, d_total_sq,
                       counts):
    n_out = h.shape[1]
    for c in range((n_out + chunk - 1) // chunk):
        _delta_bias_tiles(grad_h, h, delta, b, act, lr, c * chunk, min(n_out, c * chunk + chunk),
                          want_stats, d_total, d_total_sq)
    if want_stats:
        counts[0] += h.shape[0]  # rows
        counts[1] += 1  # steps


@njit(parallel=True, **_JIT)
def _delta_bias(grad_h, h, delta, b, act, lr, chunk, want_stats, d_total, d_total_sq, counts):
    """delta = grad_h * f'(h); b -= lr * delta.sum(0); per-unit delta sums when asked."""
    n_out = h.shape[1]
    n_chunks = (n_out + chunk - 1) // chunk
    for c in prange(n_chunks):
        _delta_bias_tiles(grad_h, h, delta, b, act, lr, c * chunk, min(n_out, c * chunk + chunk),
                          want_stats, d_total, d_total_sq)
    if want_stats:
        counts[0] += h.shape[0]  # rows
        counts[1] += 1  # steps


@njit(parallel=True, **_JIT)
def _backward_small(x, delta, W, gx, lr, want_gx, chunk, ahead, rows):
    """The small-batch backward pass, chunks of rows of W in parallel, with tiles of exactly
    the batch's rows (1 .. _BWD_MAX_ROWS), given by ``rows``, a tuple of that length (its type
    carries the height): each batch size compiles its own tile on first use, and only that one
    (all sixteen at once took two thirds of the first run's compile, benchmarks/NOTES.md
    "Compile time")."""
    n_in = W.shape[0]
    for c in prange((n_in + chunk - 1) // chunk):
        i0 = c * chunk
        _grad_update(x, delta, W, gx, lr, i0, min(n_in, i0 + chunk), want_gx,
                     tile_zeros(W, rows, _BWD_W_ROWS), ahead)


@njit(**_JIT)
def _update_rows(W, G, lr, i0, want_gw, gw_part):
    """W[i0:i0+len(G)] -= lr * G; sums of G when asked (serial, see _forward_epilogue)."""
    s1, s2 = 0.0, 0.0
    for i in range(G.shape[0]):
        w, g = W[i0 + i], G[i]
        for j in range(g.shape[0]):
            w[j] -= lr * g[j]
        if want_gw:
            for j in range(g.shape[0]):
                v = np.float64(g[j])
                s1 += v
                s2 += v * v
    gw_part[0] += s1
    gw_part[1] += s2


def _backward_blas(x, delta, W, gx, lr, want_gx, chunk, want_gw, gw_parts):
    """Large batch: NumPy's BLAS for both products, the weight gradient one block of rows at a
    time (never all of it), each block applied while it is in cache."""
    if want_gx:
        np.dot(delta, W.T, out=gx)  # before the update: the old W
    xt = np.ascontiguousarray(x.T)
    n_in = W.shape[0]
    block = np.empty((min(chunk, n_in), W.shape[1]), W.dtype)
    for c in range(_n_chunks(n_in, chunk)):
        i0 = c * chunk
        i1 = min(n_in, i0 + chunk)
        G = block[:i1 - i0]
        np.dot(xt[i0:i1], delta, out=G)
        _update_rows(W, G, lr, i0, want_gw, gw_parts[c])


# ---------------------------------------------------------------------------------------------
# Per-parameter rates (fastff.kernels.rates): the SGD pass's layout, one walk over the rows of
# W, each row's dC/dx (and curvature) read before its update, with two sums per entry instead
# of one: g = x^T delta and s = (x^2)^T q.
# ---------------------------------------------------------------------------------------------
@njit(**_JIT)
def _rate_row(w, avg, g, s, lr, hessian, damping, keep, corr, B):
    """One row of W (or b) and of its running estimate, from its sums g and s."""
    n = w.shape[0]
    fresh = like(lr, 1.0) - keep
    if hessian:
        for j in range(n):
            avg[j] = keep * avg[j] + fresh * s[j]
            w[j] -= lr * g[j] / (damping + corr * avg[j])
    else:
        unbias, rows = like(lr, B / (B - 1)), like(lr, B)
        for j in range(n):
            v = max(unbias * (rows * s[j] - g[j] * g[j]), like(lr, 0.0))
            avg[j] = keep * avg[j] + fresh * v
            w[j] -= lr * g[j] / (damping + math.sqrt(corr * avg[j]))


@njit(**_JIT)
def _rates_columns(grad_h, h, curv_h, delta, q, b, avg_b, act, lr, hessian, damping, keep, corr,
                   want_stats, d_total, d_total_sq, counts):
    """delta = grad_h f'(h); q = curv_h f'(h)^2 (diag_hessian) or delta^2; the bias's update;
    the sums of delta when asked (serial: batch x n_out work)."""
    B, n = h.shape
    _delta_tile(grad_h, h, delta, act, 0, B, 0, n)
    if hessian:
        _delta_tile(curv_h, h, q, act, 0, B, 0, n)
        _delta_tile(q, h, q, act, 0, B, 0, n)  # f' twice
    else:
        for r in range(B):
            d, e = delta[r], q[r]
            for j in range(n):
                e[j] = d[j] * d[j]
    g, s = np.zeros(n, b.dtype), np.zeros(n, b.dtype)
    for r in range(B):  # rows in order, as _delta_bias_tiles
        d, e = delta[r], q[r]
        for j in range(n):
            g[j] += d[j]
            s[j] += e[j]
    _rate_row(b, avg_b, g, s, lr, hessian, damping, keep, corr, B)
    if want_stats:
        _delta_moments(delta, 0, n, d_total, d_total_sq)
        counts[0] += B  # rows
        counts[1] += 1  # steps


@njit(parallel=True, **_JIT)
def _rates_small(x, delta, q, W, avg, gx, cx, lr, hessian, damping, keep, corr, want_gx, chunk):
    """Small batches: chunks of rows of W in parallel; per row, dC/dx (and the curvature
    below) with the old row, then the two sums and the row's update."""
    B = x.shape[0]
    n_in, n = W.shape
    for c in prange((n_in + chunk - 1) // chunk):
        g, s = np.empty(n, W.dtype), np.empty(n, W.dtype)
        for i in range(c * chunk, min(n_in, c * chunk + chunk)):
            w = W[i]
            if want_gx:
                for r in range(B):
                    d, e = delta[r], q[r]
                    acc, acc_sq = like(lr, 0.0), like(lr, 0.0)
                    for j in range(n):
                        acc += d[j] * w[j]
                    gx[r, i] = acc
                    if hessian:
                        for j in range(n):
                            acc_sq += e[j] * (w[j] * w[j])
                        cx[r, i] = acc_sq
            for j in range(n):
                g[j] = like(lr, 0.0)
                s[j] = like(lr, 0.0)
            for r in range(B):
                xv = x[r, i]
                xv2 = xv * xv
                d, e = delta[r], q[r]
                for j in range(n):
                    g[j] += xv * d[j]
                    s[j] += xv2 * e[j]
            _rate_row(w, avg[i], g, s, lr, hessian, damping, keep, corr, B)


@njit(**_JIT)
def _rates_rows(W, avg, G, S, i0, lr, hessian, damping, keep, corr, B):
    """The updates of rows i0 .. i0 + len(G) from their sums G and S (the BLAS path; serial,
    as _update_rows: a parallel team between BLAS calls fights BLAS's spinning threads)."""
    for i in range(G.shape[0]):
        _rate_row(W[i0 + i], avg[i0 + i], G[i], S[i], lr, hessian, damping, keep, corr, B)


def _rates_blas(x, delta, q, W, avg, gx, cx, lr, hessian, damping, keep, corr, want_gx, chunk):
    """Large batches: the four products in BLAS (the sums a block of rows at a time)."""
    if want_gx:
        np.dot(delta, W.T, out=gx)  # before the update: the old W
        if hessian:
            np.dot(q, np.square(W).T, out=cx)
    xt = np.ascontiguousarray(x.T)
    x2t = xt * xt
    n_in = W.shape[0]
    G = np.empty((min(chunk, n_in), W.shape[1]), W.dtype)
    S = np.empty_like(G)
    for i0 in range(0, n_in, chunk):
        i1 = min(n_in, i0 + chunk)
        np.dot(xt[i0:i1], delta, out=G[:i1 - i0])
        np.dot(x2t[i0:i1], q, out=S[:i1 - i0])
        _rates_rows(W, avg, G[:i1 - i0], S[:i1 - i0], i0, lr, hessian, damping, keep, corr,
                    x.shape[0])


@njit(**_JIT)
def _exp_row(zr, gr):
    """gr[k] = exp(zr[k] - max(zr)); returns (max, sum of gr): a softmax row before its division."""
    m = zr[0]
    for k in range(1, zr.shape[0]):
        m = max(m, zr[k])
    tot = like(m, 0.0)
    for k in range(zr.shape[0]):
        gr[k] = np.exp(zr[k] - m)
        tot += gr[k]
    return m, tot


@njit(**_JIT)
def _softmax_nll(z, y, grad):
    B, K = z.shape
    loss = 0.0
    inv_rows = like(z[0, 0], 1.0) / like(z[0, 0], B)
    for r in range(B):
        zr, gr = z[r], grad[r]
        m, tot = _exp_row(zr, gr)
        loss += np.float64(math.log(tot)) + np.float64(m) - np.float64(zr[y[r]])
        for k in range(K):
            gr[k] = gr[k] / tot
        gr[y[r]] -= like(m, 1.0)
        for k in range(K):
            gr[k] = gr[k] * inv_rows
    return loss / B


@njit(**_JIT)
def _softmax_quadratic(z, y, grad):
    """1/2 sum_k (softmax(z)_k - onehot_k)^2, mean over rows, and its gradient (in ``grad``)."""
    B, K = z.shape
    loss = 0.0
    inv_rows = like(z[0, 0], 1.0) / like(z[0, 0], B)
    for r in range(B):
        zr, gr = z[r], grad[r]
        m, tot = _exp_row(zr, gr)
        # gr holds p; dot = sum_k (p_k - t_k) p_k
        dot = like(m, 0.0)
        row = 0.0
        for k in range(K):
            p = gr[k] / tot
            gr[k] = p
            e = p - like(m, 1.0) if k == y[r] else p
            dot += e * p
            row += np.float64(e) * np.float64(e)
        loss += 0.5 * row
        for k in range(K):
            p = gr[k]
            e = p - like(m, 1.0) if k == y[r] else p
            gr[k] = p * (e - dot) * inv_rows
    return loss / B


# ---------------------------------------------------------------------------------------------
# Python entry points: validate, prepare arguments, call the compiled drivers.
# ---------------------------------------------------------------------------------------------
_CODES = {name: a.code for name, a in activations.ACTIVATIONS.items()}
_NO_I64 = np.zeros(1, np.int64)
_NO_F64 = np.zeros(1, np.float64)
_NO_COUNTS = np.zeros(2, np.int64)


def _small_batch_max():
    """Batches up to this size take the register-tile loops: config.CPU_SMALL_BATCH_MAX, which
    may not exceed the _BWD_MAX_ROWS rows a backward tile holds in registers (0: always BLAS)."""
    value = config.CPU_SMALL_BATCH_MAX
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _BWD_MAX_ROWS:
        raise InputError(f"fastff.config.CPU_SMALL_BATCH_MAX is {value!r}; it must be an integer "
                         f"from 0 to {_BWD_MAX_ROWS} (the rows a register tile of the backward "
                         "pass holds; larger batches go to BLAS)")
    return value


def _n_chunks(n, chunk):
    return (n + chunk - 1) // chunk


def forward_unchecked(x, W, b, activation, out=None, stats=None, prefetch=True):
    """The forward pass on validated, C-contiguous arrays of one dtype (used by the MLP).

    ``prefetch=False`` turns the software prefetch of the small-batch loop off: right for
    weights that stay in cache from one step to the next (see config.CPU_PREFETCH_MIN_BYTES).
    """
    code = _CODES[activation]
    if out is None:
        out = np.empty((x.shape[0], W.shape[1]), W.dtype)
    chunk = int(config.CPU_COL_CHUNK)
    use_blas = x.shape[0] > _small_batch_max()
    dt = W.dtype.type
    if use_blas:
        np.dot(x, W, out=out)  # NumPy's threaded BLAS; then the fused epilogue, serial
    if stats is None:
        args = (False, dt(0), dt(0), _NO_I64, _NO_I64, _NO_F64, _NO_F64, _NO_I64, _NO_I64, 0.0, 0.0)
    else:
        args = (True, dt(stats.low), dt(stats.high), stats.sat_low, stats.sat_high, stats.total,
                stats.total_sq, stats.hist, stats.rows, float(stats.hist_lo),
                stats.bins / (stats.hist_hi - stats.hist_lo))
    if use_blas:
        _forward_epilogue(out, b, code, chunk, *args)
    else:
        block = int(config.CPU_ROW_BLOCK)
        blocks = np.empty((_n_chunks(W.shape[0], block), x.shape[0], W.shape[1]), W.dtype)
        ahead = int(config.CPU_FWD_PREFETCH_ROWS) if prefetch else 0
        _forward(x, W, b, code, out, blocks, block, chunk, ahead, *_row_tiles(x.shape[0]), *args)
    return out


def backward_unchecked(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True, delta=None, prefetch=True):
    """The backward pass + SGD update on validated arrays (used by the MLP); ``delta`` is an
    optional (batch, n_out) workspace, ``prefetch`` as in :func:`forward_unchecked`."""
    code = _CODES[activation]
    if compute_grad_x and grad_x is None:
        grad_x = np.empty(x.shape, W.dtype)
    dt = W.dtype.type
    lr = dt(lr)
    B = x.shape[0]
    n_in, n_out = W.shape
    if delta is None:
        delta = np.empty((B, n_out), W.dtype)
    want_stats = stats is not None
    use_blas = B > _small_batch_max()
    (_delta_bias_serial if use_blas else _delta_bias)(
        grad_h, h, delta, b, code, lr, int(config.CPU_COL_CHUNK), want_stats,
        stats.delta_total if want_stats else _NO_F64,
        stats.delta_total_sq if want_stats else _NO_F64,
        stats.counts if want_stats else _NO_COUNTS)
    gx = grad_x if compute_grad_x else np.empty((1, 1), W.dtype)
    chunk = int(config.CPU_ROW_BLOCK)
    want_gw = want_stats and stats.weight_grad
    if use_blas:
        parts = np.zeros((_n_chunks(n_in, chunk), 2), np.float64)  # one row per chunk, always
        _backward_blas(x, delta, W, gx, lr, compute_grad_x, chunk, want_gw, parts)
        moments = parts.sum(axis=0)  # fixed chunk order: deterministic
    else:
        if want_gw:  # from x and delta, which the update leaves alone
            moments = _grad_w_moments(x, delta)
        ahead = int(config.CPU_BWD_PREFETCH_ROWS) if prefetch else 0
        _backward_small(x, delta, W, gx, lr, compute_grad_x, chunk, ahead, _height(B))
    if want_gw:
        stats.grad_w_total += moments[0]
        stats.grad_w_total_sq += moments[1]
    return grad_x if compute_grad_x else None


def second_order_unchecked(x, h, W, b, grad_h, activation, lr, rates, curv_h=None, grad_x=None,
                           curv_x=None, stats=None, compute_grad_x=True, delta=None,
                           prefetch=True):
    """dense_backward_second_order on validated arrays (used by the MLP); ``delta`` is an
    optional (batch, n_out) workspace, ``prefetch`` means nothing here."""
    dt = W.dtype.type
    B = x.shape[0]
    n_in, n_out = W.shape
    hessian = rates.method == "diag_hessian"
    if compute_grad_x and grad_x is None:
        grad_x = np.empty(x.shape, W.dtype)
    if compute_grad_x and hessian and curv_x is None:
        curv_x = np.empty(x.shape, W.dtype)
    if delta is None:
        delta = np.empty((B, n_out), W.dtype)
    q = np.empty((B, n_out), W.dtype)
    want_stats = stats is not None
    # lr / (1 + A / damping) as lr * damping / (damping + A): one division per entry
    hyper = (dt(lr * rates.damping), hessian, dt(rates.damping), dt(rates.decay),
             dt(rates.correction()))
    _rates_columns(grad_h, h, curv_h if hessian else q, delta, q, b, rates.b, _CODES[activation],
                   *hyper, want_stats, stats.delta_total if want_stats else _NO_F64,
                   stats.delta_total_sq if want_stats else _NO_F64,
                   stats.counts if want_stats else _NO_COUNTS)
    if want_stats and stats.weight_grad:  # from x and delta, which the update leaves alone
        moments = _grad_w_moments(x, delta)
        stats.grad_w_total += moments[0]
        stats.grad_w_total_sq += moments[1]
    gx = grad_x if compute_grad_x else np.empty((1, 1), W.dtype)
    cx = curv_x if compute_grad_x and hessian else np.empty((1, 1), W.dtype)
    path = _rates_blas if B > _small_batch_max() else _rates_small
    path(x, delta, q, W, rates.W, gx, cx, *hyper, compute_grad_x, int(config.CPU_ROW_BLOCK))
    rates.steps += 1
    return (grad_x if compute_grad_x else None), (curv_x if compute_grad_x and hessian else None)


def dense_backward_second_order(x, h, W, b, grad_h, activation, lr, rates, curv_h=None,
                                grad_x=None, curv_x=None, stats=None, compute_grad_x=True):
    """Backward pass and per-parameter-rate update in one pass over W; the contract of
    reference.dense_backward_second_order."""
    grad_x, curv_x = second_order_args(x, h, W, b, grad_h, activation, lr, rates, curv_h,
                                       grad_x, curv_x, stats, compute_grad_x)
    c = np.ascontiguousarray
    return second_order_unchecked(c(x), c(h), W, b, c(grad_h), activations.get(activation).name,
                                  lr, rates, None if curv_h is None else c(curv_h), grad_x,
                                  curv_x, stats, bool(compute_grad_x))


def dense_forward(x, W, b, activation, out=None, stats=None):
    """h = f(x @ W + b) with statistics, fused; the contract of reference.dense_forward.

    Parameters
    ----------
    x : ndarray (batch, n_in), float32 or float64
    W : ndarray (n_in, n_out), same dtype
    b : ndarray (n_out,), same dtype
    activation : str
    out : ndarray (batch, n_out), optional
    stats : ForwardStats, optional
        Accumulates saturation counts, sums and the histogram of h in the same pass; made for
        this layer (``ForwardStats(n_out, activation)``).

    Returns
    -------
    ndarray (batch, n_out)
    """
    activation, out = forward_args(x, W, b, activation, out, stats)
    return forward_unchecked(np.ascontiguousarray(x), np.ascontiguousarray(W),
                             np.ascontiguousarray(b), activation, out, stats)


def dense_backward_sgd(x, h, W, b, grad_h, activation, lr, grad_x=None, stats=None,
                       compute_grad_x=True):
    """Backward pass and SGD update in one pass over W; the contract of reference.dense_backward_sgd.

    W and b are updated in place and must be C-contiguous and writable. Returns dC/dx computed
    with the old W (or None when ``compute_grad_x`` is False).
    """
    activation, grad_x = backward_args(x, h, W, b, grad_h, activation, lr, grad_x, stats,
                                       compute_grad_x)
    return backward_unchecked(np.ascontiguousarray(x), np.ascontiguousarray(h), W, b,
                              np.ascontiguousarray(grad_h), activation, lr, grad_x, stats,
                              bool(compute_grad_x))


def softmax_nll(z, y, grad_z=None):
    """Mean softmax negative log-likelihood and its gradient; the contract of reference.softmax_nll."""
    grad_z = softmax_args(z, y, grad_z)
    loss = _softmax_nll(np.ascontiguousarray(z), np.ascontiguousarray(y, dtype=np.int64), grad_z)
    return float(loss), grad_z


def softmax_nll_unchecked(z, y, grad_z=None):
    """softmax_nll on validated arrays (used by the MLP)."""
    if grad_z is None:
        grad_z = np.empty_like(z)
    return float(_softmax_nll(z, y, grad_z)), grad_z


def softmax_quadratic(z, y, grad_z=None):
    """Mean quadratic cost of a softmax and its gradient; the contract of
    reference.softmax_quadratic."""
    grad_z = softmax_args(z, y, grad_z)
    loss = _softmax_quadratic(np.ascontiguousarray(z), np.ascontiguousarray(y, dtype=np.int64),
                              grad_z)
    return float(loss), grad_z


def softmax_quadratic_unchecked(z, y, grad_z=None):
    """softmax_quadratic on validated arrays (used by the MLP)."""
    if grad_z is None:
        grad_z = np.empty_like(z)
    return float(_softmax_quadratic(z, y, grad_z)), grad_z


def threading_layer():
    """The Numba threading layer in use (after the first parallel call)."""
    return numba.threading_layer()
