"""Shapeset-3x2's counter-based stream: any image drawn on its own, the same bits on CPU and GPU.

The ``counter`` generator of :mod:`fastff.data.shapeset`. Image ``i`` of a stream is a pure
function of (key, i): its random numbers come from Philox4x32-10 (Salmon et al. 2011, the
generator of cuRAND and Random123) with the counter (i mod 2^32, i div 2^32, draw, 0), so a
batch can be rendered in parallel, on the CPU by this module (Numba) and on the GPU by
``fastff/kernels/cuda/shapeset.cu``, which is this module's twin line for line.

The two give the same pixels and labels, bit for bit, because every operation on a coordinate
is one IEEE operation rounded to nearest, done in the same order on both: + - * (the CUDA twin
writes them as ``__dmul_rn``/``__dadd_rn`` so that no multiply-add is fused), a correctly
rounded reciprocal instead of a division (``__drcp_rn``), floor and ceil. Nothing calls a
transcendental: the cosines come from :func:`angle_table`, computed once by NumPy and given to
both. The price is that the first rotation is drawn from 65,536 angles (0.0055 degrees apart,
under a thousandth of a pixel at the image's edge) instead of a continuum.

The parameters are those of the ``sequential`` generator (Glorot's own generator,
see :mod:`fastff.data.shapeset`), so the prior, the balance and the objects' statistics are the same; the images are
not (another stream).
"""
import numpy as np
from numba import njit, prange


from ..shapeset_spec import (BG_LEVELS, FG_LEVELS, N_VERTICES, OVERLAP_MAX, REJECTION_MAX,
                             ROTATIONS, SCALE_MAX, SCALE_MIN, TABLE_COARSE, TABLE_FINE,
                             TABLE_ROTATIONS, TABLE_VERTEX_OFFSET, TABLE_VERTICES, THETA_STEPS)

# Philox4x32-10's multipliers and Weyl increments (Random123, philox.h)
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)

@njit(cache=True)
def philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of the counter (c0..c3) under the key (k0, k1), as uint64 holding 32 bits."""
    for i in range(10):
        if i > 0:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = ((p1 >> _32) ^ c1 ^ k0, p1 & _MASK, (p0 >> _32) ^ c3 ^ k1, p0 & _MASK)
    return c0, c1, c2, c3


@njit(cache=True)
def _words(state):
    """The next draw of an image's stream; state = [k0, k1, image lo, image hi, draw]."""
    w = philox(state[2], state[3], state[4], np.uint64(0), state[0], state[1])
    state[4] += np.uint64(1)
    return w


@njit(cache=True)
def _uniform(state):
    """A double in [0, 1) with 53 random bits (NumPy's random_sample recipe)."""
    w0, w1, _, _ = _words(state)
    return (float(w0 >> np.uint64(5)) * 67108864.0 + float(w1 >> np.uint64(6))) * (
        1.0 / 9007199254740992.0)


@njit(cache=True)
def _below(state, n):
    """An integer in [0, n): the high word of a 32-bit draw times n (bias under n / 2^32)."""
    w0, _, _, _ = _words(state)
    return np.int64((w0 * np.uint64(n)) >> _32)


@njit(cache=True)
def _polygon(state, kind, size, table, vx, vy):
    """One random object's vertices (pixel units, inside the image) into vx[:n], vy[:n]."""
    n = N_VERTICES[kind]
    j = _below(state, THETA_STEPS * THETA_STEPS)
    ch, sh = table[TABLE_COARSE + (j >> 8)], table[TABLE_COARSE + THETA_STEPS + (j >> 8)]
    cl, sl = table[TABLE_FINE + (j & 255)], table[TABLE_FINE + THETA_STEPS + (j & 255)]
    ct = ch * cl - sh * sl
    st = sh * cl + ch * sl
    s1 = SCALE_MIN + (SCALE_MAX - SCALE_MIN) * _uniform(state)
    s2 = SCALE_MIN + (SCALE_MAX - SCALE_MIN) * _uniform(state)
    sx, sy = max(s1, s2) * size, min(s1, s2) * size
    r = _below(state, ROTATIONS)
    cp, sp = table[TABLE_ROTATIONS + r], table[TABLE_ROTATIONS + ROTATIONS + r]
    off = TABLE_VERTEX_OFFSET[kind]
    for k in range(n):
        ck, sk = table[off + k], table[TABLE_VERTICES + off + k]
        ca = ct * ck - st * sk
        sa = st * ck + ct * sk
        px = (0.5 * ca) * sx
        py = (0.5 * sa) * sy
        vx[k] = cp * px - sp * py
        vy[k] = sp * px + cp * py
    lox, hix, loy, hiy = vx[0], vx[0], vy[0], vy[0]
    for k in range(1, n):
        lox, hix = min(lox, vx[k]), max(hix, vx[k])
        loy, hiy = min(loy, vy[k]), max(hiy, vy[k])
    # translate: the bounding box must lie in [1, size - 1] (1-pixel margin)
    tx = (1.0 - lox) + _uniform(state) * max(0.0, (size - 2.0) - (hix - lox))
    ty = (1.0 - loy) + _uniform(state) * max(0.0, (size - 2.0) - (hiy - loy))
    for k in range(n):
        vx[k] += tx
        vy[k] += ty
    return n


@njit(cache=True)
def _row_span(vx, vy, n, r, size):
    """The columns [left, right) of row r whose pixel centres lie inside the polygon."""
    yc = r + 0.5
    lo, hi = np.inf, -np.inf
    for k in range(n):
        k2 = k + 1 if k + 1 < n else 0
        x1, y1, x2, y2 = vx[k], vy[k], vx[k2], vy[k2]
        if ((y1 <= yc and yc <= y2) or (y2 <= yc and yc <= y1)) and y1 != y2:
            xc = x1 + ((yc - y1) * (x2 - x1)) * (1.0 / (y2 - y1))
            lo, hi = min(lo, xc), max(hi, xc)
    if lo > hi:
        return 0, 0
    c0 = max(0, int(np.ceil(lo - 0.5)))
    c1 = min(size, int(np.floor(hi - 0.5)) + 1)
    return c0, max(c0, c1)


@njit(cache=True)
def _pair_class(a, b):
    """(shape a, shape b or -1) -> class id: 0 T, 1 P, 2 E, 3 T+P, 4 P+E, 5 T+E, 6-8 same."""
    if b < 0:
        return a
    if a == b:
        return 6 + a
    return 3 if a + b == 1 else (4 if a + b == 3 else 5)


@njit(cache=True)
def _image(k0, k1, index, size, balanced, table, mul, add, out):
    """Image ``index`` of the stream keyed (k0, k1) into out (size * size float32); returns
    (label, number of objects, Philox draws, polygons drawn, their vertices)."""
    state = np.empty(5, np.uint64)
    state[0], state[1] = k0, k1
    state[2], state[3], state[4] = index & _MASK, index >> _32, np.uint64(0)
    vx, vy = np.empty(20), np.empty(20)
    l1, r1 = np.empty(size, np.int64), np.empty(size, np.int64)
    l2, r2 = np.zeros(size, np.int64), np.zeros(size, np.int64)
    if balanced:
        cls = _below(state, 9)
        a = cls if cls < 3 else (cls - 6 if cls >= 6 else (0 if cls != 4 else 1))
        b = -1 if cls < 3 else (cls - 6 if cls >= 6 else (1 if cls == 3 else 2))
    else:
        a = _below(state, 3)
        b = _below(state, 3) if _below(state, 2) == 1 else -1
    bg = BG_LEVELS[0] + _below(state, BG_LEVELS[1] - BG_LEVELS[0] + 1)
    fg1 = FG_LEVELS[0] + _below(state, FG_LEVELS[1] - FG_LEVELS[0] + 1)
    fg2 = FG_LEVELS[0] + _below(state, FG_LEVELS[1] - FG_LEVELS[0] + 1)
    if _uniform(state) < 0.5:  # dark shapes on a light background
        bg, fg1, fg2 = 255 - bg, 255 - fg1, 255 - fg2
    n = _polygon(state, a, size, table, vx, vy)
    polygons, vertices = 1, n
    area1 = 0
    for r in range(size):
        l1[r], r1[r] = _row_span(vx, vy, n, r, size)
        area1 += r1[r] - l1[r]
    placed = 1
    if b >= 0:
        for _ in range(REJECTION_MAX + 1):
            n = _polygon(state, b, size, table, vx, vy)
            polygons += 1
            vertices += n
            covered = 0
            for r in range(size):
                l2[r], r2[r] = _row_span(vx, vy, n, r, size)
                covered += max(0, min(r1[r], r2[r]) - max(l1[r], l2[r]))
            if covered <= OVERLAP_MAX * area1:
                placed = 2
                break
    for r in range(size):
        for c in range(size):
            level = bg
            if l1[r] <= c < r1[r]:
                level = fg1
            if placed == 2 and l2[r] <= c < r2[r]:
                level = fg2
            out[r * size + c] = np.float32(level) * mul + add
    label = _pair_class(a, b) if placed == 2 else a
    return label, placed, np.int64(state[4]), polygons, vertices


@njit(cache=True, parallel=True)
def render(k0, k1, first, n, size, balanced, table, mul, add, images, labels, n_objects):
    """Images first .. first + n - 1 of the stream keyed (k0, k1), as float32 pixels
    ``level * mul + add``, in parallel: each image depends on its index alone."""
    for m in prange(n):
        labels[m], n_objects[m], _, _, _ = _image(k0, k1, np.uint64(first + m), size, balanced,
                                                  table, mul, add, images[m])


@njit(cache=True)
def work(k0, k1, n, size, balanced, table):
    """What rendering images 0 .. n - 1 of a stream does, summed: (Philox draws, polygons,
    polygon vertices); the GPU's cost model (benchmarks/gpu_model.py) counts from them."""
    out = np.empty(size * size, np.float32)
    draws = polygons = vertices = 0
    for m in range(n):
        _, _, d, p, v = _image(k0, k1, np.uint64(m), size, balanced, table, np.float32(1),
                               np.float32(0), out)
        draws += d
        polygons += p
        vertices += v
    return draws, polygons, vertices
