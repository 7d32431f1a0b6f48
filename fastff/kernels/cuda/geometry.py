"""Launch geometry of the layer-by-layer kernels: plain Python, shared with the host emulator of
the tests. Counts are fixed by :mod:`fastff.config`, never read from the GPU, so that every sum
runs in the same order (and gives the same bits) on every GPU.
"""
from ... import config


def _ceil(a, b):
    return -(-a // b)


def gemm_geometry(M, R, Nc, blocks=None):
    """(grid, block, chunk, splits) of a split-R product of an (M, R) by (R, Nc) matrix.

    The reduction is cut into ``splits`` slices of ``chunk`` (a multiple of the tile depth) so
    that there are at most ``blocks`` (``config.CUDA_SPLIT_BLOCKS``) blocks, one wave of the GPU
    (more would
    leave a second wave of a few blocks, each as long as the first): at batch 10 a 1000 x 1000
    layer has 16 column tiles and one row tile, and 16 splits give the other SMs work. The count is
    fixed, not read from the GPU, so that the sums (and so the bits) are the same on every GPU
    (on CUDA cores: with ``tf32`` the tensor cores add each 8-term product their own way, which
    may differ between GPU generations).
    """
    tm, tn, tk = config.CUDA_GEMM_TILE
    tiles = _ceil(Nc, tn) * _ceil(M, tm)
    budget = config.CUDA_SPLIT_BLOCKS if blocks is None else blocks
    want = max(1, min(_ceil(R, tk), budget // tiles))
    chunk = _ceil(_ceil(R, want), tk) * tk
    splits = _ceil(R, chunk)
    return (_ceil(Nc, tn), _ceil(M, tm), splits), (tn // 4, tm // 4, 1), chunk, splits


def gemm_geometry_beside(M, R, Nc, other):
    """:func:`gemm_geometry` of a product whose launch also runs ``other`` blocks of another job
    (grad_x_and_update: an update beside dC/dx). Where the two would pass one wave
    (``config.CUDA_SPLIT_BLOCKS``), the product takes fewer splits that leave the other job room
    in it, if each split's chunk stays under twice its own (one wave of longer splits is then
    shorter than two waves); else its own geometry. At batch 128 the output layer's update (16
    blocks) beside the 256 of a 1000-wide dC/dx gives that dC/dx 7 splits instead of 8."""
    own = gemm_geometry(M, R, Nc)
    budget = config.CUDA_SPLIT_BLOCKS - other
    grid = own[0]
    if grid[0] * grid[1] * grid[2] <= budget:
        return own
    fit = gemm_geometry(M, R, Nc, budget)
    grid = fit[0]
    return fit if grid[0] * grid[1] * grid[2] <= budget and fit[2] < 2 * own[2] else own


def columns_geometry(n, sms):
    """(grid, block) of a kernel with one thread per column (grid-stride beyond that)."""
    threads = int(config.CUDA_THREADS)
    return (max(1, min(_ceil(n, threads), config.CUDA_BLOCKS_PER_SM * sms)),), (threads,)


def delta_geometry(B, N):
    """(grid, block) of dense_backward_delta: blocks of CUDA_THREADS columns by
    CUDA_DELTA_ROWS rows, so that a large batch spreads over the SMs."""
    threads = int(config.CUDA_THREADS)
    return (_ceil(N, threads), _ceil(B, config.CUDA_DELTA_ROWS), 1), (threads, 1, 1)


def update_geometry(K, N):
    """(grid, block, blocks) of the weight update: one block per UT x UT tile of W."""
    ut = config.CUDA_UPDATE_TILE
    grid = (_ceil(N, ut), _ceil(K, ut), 1)
    return grid, (ut // 4, ut // 4, 1), grid[0] * grid[1]


def step_chunks(strip=None, lanes=None, rows=None):
    """How the persistent step (train_step.cu) stages its strips' inputs in shared memory, as
    the -D defines of its compile: ``(kc, jc, stage)``.

    A forward strip copies ``kc`` columns of its layer's input at a time, transposed to
    ``[k][rows padded to the thread's row groups, + 4]`` so that a thread reads its rows with
    16-byte loads; a backward strip copies ``jc`` columns of delta as ``[row][j]``, each
    thread taking 4 consecutive columns. Both share one buffer of ``stage`` elements with the
    strip's reduction (``red``, rows x strip x lanes): ``kc`` is the largest multiple of the
    lanes that fits beside ``red``, ``jc`` the largest multiple of 4 lanes (at least one of
    each).
    """
    strip = config.CUDA_STEP_STRIP if strip is None else strip
    lanes = config.CUDA_STEP_LANES if lanes is None else lanes
    rows = config.CUDA_STEP_MAX_BATCH if rows is None else rows
    red = rows * strip * lanes
    row_groups = min(strip, 4)  # as many as a thread's columns: strip x lanes threads in all
    pitch = row_groups * _ceil(rows, row_groups) + 4
    kc = max(lanes, red // pitch // lanes * lanes)
    jc = max(4 * lanes, red // rows // (4 * lanes) * (4 * lanes))
    return kc, jc, max(red, kc * pitch, rows * jc)
