"""Small batches (up to ``config.CPU_SMALL_BATCH_MAX`` rows; the paper's batch is 10): the
matrix products in fastff's own loops over register tiles (:mod:`.simd`).

At such a batch a layer streams its weights past a few rows of activations, so the loops keep
every partial sum in vector registers for the whole reduction and read each row of W once per
pass. W is split into the same blocks of ``config.CPU_ROW_BLOCK`` rows in both passes, one
block per task, so that each row of W stays with one core from the forward pass to the backward
pass (splitting the forward by columns made the two cores trade every line of W: 2.05 against
1.30 ms a step, benchmarks/NOTES.md "one owner per row of W").

* Forward (:func:`gemm_blocks`): blocks[k] = x[:, rows k] @ W[rows k], the batch split into
  balanced row tiles (10 rows -> 4 + 3 + 3 with 16 registers) over strips of columns; the
  epilogue then sums the blocks in block order (:func:`.epilogues.forward_epilogue`).
* Backward (:func:`backward_rows`): the whole batch is one tile, by a few rows of W at a time:
  each row's dC/dx is read with the old row, then the row takes its SGD update while in L1.
  The weight gradient is never materialized.

Tile shapes are read from ``config.CPU_FORWARD_TILE`` and ``config.CPU_BACKWARD_W_ROWS`` at
call time and travel as tuple lengths in the argument types (:func:`height`), so that each shape
compiles its own code on first use, and only that shape.
"""
from numba import njit, prange

from ... import config
from ...errors import InputError
from .jit import JIT, parallel_and_serial
from .simd import (VEC_REGISTERS, prefetch, tile_coefs, tile_grad_update, tile_hsum_store,
                   tile_lanes, tile_rank1, tile_store, tile_update, tile_zeros)

# The most batch rows a backward tile holds: rows x CPU_BACKWARD_W_ROWS partial sums.
BACKWARD_MAX_ROWS = 16


def height(n):
    """A tuple of n items: a tile dimension carried in a type (see simd._literal)."""
    return (0,) * n


def forward_shape(batch):
    """(n_tiles, tall, short, vecs): the balanced row tiles :func:`gemm_blocks` splits a batch
    into (tall and short as heights) and the strip width in vectors, from the configured tile
    of the host's register file."""
    shape = config.CPU_FORWARD_TILE.get(VEC_REGISTERS) if isinstance(config.CPU_FORWARD_TILE, dict) else None
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8 for v in shape)):
        raise InputError(f"fastff.config.CPU_FORWARD_TILE[{VEC_REGISTERS}] is {shape!r}; it must be "
                         "(rows, vectors), two integers from 1 to 8, for this machine's "
                         f"{VEC_REGISTERS} vector registers")
    rows, vecs = shape
    n_tiles = -(-batch // rows)
    return n_tiles, height(-(-batch // n_tiles)), height(batch // n_tiles), height(vecs)


def backward_shape(batch):
    """(rows, w_rows) as heights: the backward tile, all of the batch by a few rows of W."""
    w_rows = config.CPU_BACKWARD_W_ROWS
    if isinstance(w_rows, bool) or not isinstance(w_rows, int) or not 1 <= w_rows <= 4:
        raise InputError(f"fastff.config.CPU_BACKWARD_W_ROWS is {w_rows!r}; it must be an "
                         "integer from 1 to 4")
    return height(batch), height(w_rows)


# -- forward -----------------------------------------------------------------------------------
@njit(inline="always", **JIT)
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


@njit(inline="always", **JIT)
def _strip_tile(x, r0, W, s, i0, i1, j, n, ahead, width, h, tall, short, vecs):
    """_strip with a row tile of ``h`` rows, the length of ``tall`` or of ``short``."""
    if h == len(tall):
        _strip(x, r0, W, s, i0, i1, j, n, tile_zeros(W, tall, vecs), ahead, width)
    else:
        _strip(x, r0, W, s, i0, i1, j, n, tile_zeros(W, short, vecs), ahead, width)


@njit(inline="always", **JIT)
def _gemm_rows(x, W, s, i0, i1, ahead, n_tiles, tall, short, vecs):
    """s = x[:, i0:i1] @ W[i0:i1]: the partial product of one block of rows of W, one strip of
    ``len(vecs)`` vectors of columns at a time, the batch in ``n_tiles`` balanced row tiles of
    ``len(tall)`` or ``len(short)`` rows. The first row tile of a strip prefetches; the others
    find the strip in cache."""
    B = x.shape[0]
    n_out = W.shape[1]
    width = len(vecs) * tile_lanes(tile_zeros(W, 1, 1))
    for j in range(0, n_out, width):
        r0 = 0
        for t in range(n_tiles):
            h = (B - r0 + n_tiles - t - 1) // (n_tiles - t)  # balanced: 10 rows -> 4 + 3 + 3
            a = ahead if t == 0 else 0
            if n_out - j >= width:  # a full strip: plain loads (masked ones are slow on AVX2)
                _strip_tile(x, r0, W, s, i0, i1, j, None, a, width, h, tall, short, vecs)
            else:
                _strip_tile(x, r0, W, s, i0, i1, j, n_out - j, a, width, h, tall, short, vecs)
            r0 += h


def _gemm_blocks(x, W, blocks, block, ahead, n_tiles, tall, short, vecs):
    """blocks[k] = x[:, rows k] @ W[rows k] for the blocks of ``block`` rows of W, in parallel."""
    n_in = W.shape[0]
    for k in prange(blocks.shape[0]):
        i0 = k * block
        _gemm_rows(x, W, blocks[k], i0, min(n_in, i0 + block), ahead, n_tiles, tall, short, vecs)


gemm_blocks, gemm_blocks_serial = parallel_and_serial(_gemm_blocks)


# -- backward ----------------------------------------------------------------------------------
@njit(inline="always", **JIT)
def _dot_update(x, delta, W, gx, lr, i0, i1, tile, w_rows, ahead):
    """Rows i0..i1 of W, len(w_rows) at a time: gx[:, i] = delta @ W[i] with the old row, then
    W[i] -= lr * x[:, i] @ delta. The SGD coefficients of the rows are built once (tile_coefs)
    rather than loaded for every column vector. Full vectors first, then a masked tail; the
    rows ``ahead`` on are prefetched (measured from DRAM: 150 -> 126 us per layer)."""
    n, K = W.shape[1], W.shape[0]
    step = len(w_rows)
    lanes = tile_lanes(tile)
    n_full = n - n % lanes
    for i in range(i0, i1, step):
        nv = min(step, i1 - i)
        c = tile_coefs(tile, x, i, nv, lr)
        acc = tile
        j = 0
        if nv == step:
            for j in range(0, n_full, lanes):
                if i + ahead + step - 1 < K:
                    for v in range(step):
                        prefetch(W, i + ahead + v, j)
                acc = tile_grad_update(acc, delta, W, i, None, j, None, c)
            j = n_full
        for jm in range(j, n, lanes):  # masked: the last columns, or a lone last row of W
            acc = tile_grad_update(acc, delta, W, i, nv, jm, n - jm, c)
        tile_hsum_store(acc, gx, i, nv)


@njit(inline="always", **JIT)
def _update(x, delta, W, lr, i0, i1, tile, w_rows, ahead):
    """_dot_update without dC/dx (the first layer): W[i] -= lr * x[:, i] @ delta.

    A twin rather than a flag inside _dot_update: with both loops in one function the dC/dx
    loop compiled to slower code (126 against 110 us per 1000x1000 layer, measured)."""
    n, K = W.shape[1], W.shape[0]
    step = len(w_rows)
    lanes = tile_lanes(tile)
    n_full = n - n % lanes
    for i in range(i0, i1, step):
        nv = min(step, i1 - i)
        c = tile_coefs(tile, x, i, nv, lr)
        j = 0
        if nv == step:
            for j in range(0, n_full, lanes):
                if i + ahead + step - 1 < K:
                    for v in range(step):
                        prefetch(W, i + ahead + v, j)
                tile_update(delta, W, i, None, j, None, c)
            j = n_full
        for jm in range(j, n, lanes):
            tile_update(delta, W, i, nv, jm, n - jm, c)


def _backward_rows(x, delta, W, gx, lr, want_gx, chunk, ahead, rows, w_rows):
    """The small-batch backward pass over chunks of ``chunk`` rows of W in parallel, with tiles
    of exactly the batch's rows (1 .. BACKWARD_MAX_ROWS, the length of ``rows``): each batch
    size compiles its own tile on first use, and only that one (all sixteen at once took two
    thirds of the first run's compile, benchmarks/NOTES.md "Compile time")."""
    n_in = W.shape[0]
    for c in prange((n_in + chunk - 1) // chunk):
        i0 = c * chunk
        i1 = min(n_in, i0 + chunk)
        if want_gx:
            _dot_update(x, delta, W, gx, lr, i0, i1, tile_zeros(W, rows, w_rows), w_rows, ahead)
        else:
            _update(x, delta, W, lr, i0, i1, tile_zeros(W, rows, w_rows), w_rows, ahead)


backward_rows, backward_rows_serial = parallel_and_serial(_backward_rows)
