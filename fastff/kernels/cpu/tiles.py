"""Small batches (up to ``config.CPU_SMALL_BATCH_MAX`` rows; the paper's batch is 10): the
matrix products in fastff's own loops over SIMD registers (:mod:`.simd`).

At such a batch a layer streams its weights past a few rows of activations, so both passes
read each row of W once, in the order the rows lie in memory, and every core keeps to its own
rows: W is split into the same blocks of ``config.CPU_ROW_BLOCK`` rows in both passes, one block
per task, so that each row of W stays with one core from the forward pass to the backward pass
(splitting the forward by columns made the two cores trade every line of W: 2.05 against
1.30 ms a step, benchmarks/NOTES.md "one owner per row of W").

* Forward (:func:`gemm_blocks`): blocks[k] = x[:, rows k] @ W[rows k], a panel of
  ``config.CPU_FORWARD_W_ROWS`` rows of W by ``config.CPU_FORWARD_W_VECS`` vectors of columns
  at a time (:func:`.simd.rows_rank_k`): the panel's vectors are loaded once and added into
  every row of the block's partial product, which stays in the core's cache; one broadcast of
  x serves the panel's vectors of a row of W. The epilogue then sums the blocks in block order
  (:func:`.epilogues.forward_epilogue`). Reading W in row order is what the hardware prefetchers
  follow; column strips of W, with the partial sums in registers, walked W with a one-row stride
  and waited on memory whenever W was not in cache (benchmarks/NOTES.md "Forward in row order").
  A software prefetch ``config.CPU_FWD_PREFETCH_ROWS`` rows ahead keeps the panels fed from
  memory (NOTES.md "Forward prefetch").
* Backward (:func:`backward_rows`): the whole batch is one tile, by a few rows of W at a time:
  each row's dC/dx is read with the old row, then the row takes its SGD update while in L1.
  The weight gradient is never materialized.

Panel and tile sizes are read from ``config.CPU_FORWARD_W_ROWS``, ``CPU_FORWARD_W_VECS`` and
``config.CPU_BACKWARD_W_ROWS`` at call time and travel, with the batch size, as tuple lengths in
the argument types (:func:`height`), so that each shape compiles its own code on first use, and
only that shape.
"""
from numba import njit, prange

from ... import config
from ...errors import InputError
from .jit import JIT, parallel_and_serial
from .simd import (LINE_BYTES, VEC_REGISTERS, prefetch, rows_rank_k, tile_coefs,
                   tile_grad_update, tile_hsum_store, tile_lanes, tile_update, tile_zeros)

# The most batch rows a backward tile holds: rows x CPU_BACKWARD_W_ROWS partial sums.
BACKWARD_MAX_ROWS = 16


def height(n):
    """A tuple of n items: a tile dimension carried in a type (see ``_literal`` in simd.py)."""
    return (0,) * n


_ONE = height(1)  # a height of 1, for compiled code


def setting(name, low, high, why=""):
    """config.<name>, an integer from low to high, or an InputError that says so (and ``why``)."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"fastff.config.{name} is {value!r}; it must be an integer from {low} "
                         f"to {high}{why}")
    return value


def forward_shape(batch):
    """(rows, w_rows, w_vecs) as heights: the forward's panel, all of the batch by a few rows of
    W by a few vectors of columns; the panel's vectors of W, a row's sums and a broadcast must
    fit the vector registers."""
    w_vecs = setting("CPU_FORWARD_W_VECS", 1, VEC_REGISTERS // 2 - 1)
    w_rows = setting("CPU_FORWARD_W_ROWS", 1, (VEC_REGISTERS - 1) // w_vecs - 1,
                     f" with CPU_FORWARD_W_VECS = {w_vecs} (the panel's {w_vecs} vectors per row "
                     f"of W, a row's {w_vecs} sums and a broadcast in {VEC_REGISTERS} registers)")
    return height(batch), height(w_rows), height(w_vecs)


def backward_shape(batch):
    """(rows, w_rows) as heights: the backward tile, all of the batch by a few rows of W."""
    return height(batch), height(setting("CPU_BACKWARD_W_ROWS", 1, 4))


# -- forward -----------------------------------------------------------------------------------
@njit(inline="always", **JIT)
def _gemm_panels(x, W, s, i, rows, w_rows, w_vecs, ahead):
    """s += x[:, i:i+len(w_rows)] @ W[i:i+len(w_rows)] across all columns: panels
    len(w_vecs) vectors wide, then one vector wide, then the last columns masked. With
    ``ahead`` > 0 each wide panel first asks for the same columns ``ahead`` rows down."""
    n, K = W.shape[1], W.shape[0]
    lanes = tile_lanes(tile_zeros(W, 1, 1))
    width = lanes * len(w_vecs)
    # one prefetch per cache line: every vector when a vector fills a line or more
    per_line = max(1, LINE_BYTES // (lanes * W.itemsize))
    n_wide = n - n % width
    n_full = n - n % lanes
    i_ahead = i + ahead
    for j in range(0, n_wide, width):
        if ahead > 0 and i_ahead + len(w_rows) <= K:
            for v in range(len(w_rows)):
                for q in range(0, len(w_vecs), per_line):
                    prefetch(W, i_ahead + v, j + q * lanes)
        rows_rank_k(s, x, W, i, j, None, rows, w_rows, w_vecs)
    for j in range(n_wide, n_full, lanes):
        rows_rank_k(s, x, W, i, j, None, rows, w_rows, _ONE)
    if n_full < n:
        rows_rank_k(s, x, W, i, n_full, n - n_full, rows, w_rows, _ONE)


@njit(inline="always", **JIT)
def _gemm_rows(x, W, s, i0, i1, ahead, rows, w_rows, w_vecs):
    """s = x[:, i0:i1] @ W[i0:i1], ``len(w_rows)`` rows of W at a time (the last few rows one
    at a time), each panel across all columns before the next: every element of s sums its
    terms in the order of i."""
    step = len(w_rows)
    s[:] = 0
    i_tail = i1 - (i1 - i0) % step
    for i in range(i0, i_tail, step):
        _gemm_panels(x, W, s, i, rows, w_rows, w_vecs, ahead)
    for i in range(i_tail, i1):
        _gemm_panels(x, W, s, i, rows, _ONE, w_vecs, ahead)


def _gemm_blocks(x, W, blocks, block, ahead, rows, w_rows, w_vecs):
    """blocks[k] = x[:, rows k] @ W[rows k] for the blocks of ``block`` rows of W, in parallel;
    the rows ``ahead`` on are prefetched (0: none)."""
    n_in = W.shape[0]
    for k in prange(blocks.shape[0]):
        i0 = k * block
        _gemm_rows(x, W, blocks[k], i0, min(n_in, i0 + block), ahead, rows, w_rows, w_vecs)


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
