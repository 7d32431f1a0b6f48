"""Shapeset-3x2's parameters (the paper's §2.1: 32 x 32 images of one or two of three shapes,
nine classes) and the counter stream's shared tables: a leaf both renderers read, the CPU's
(:mod:`fastff.data.shapeset`, :mod:`fastff.data.shapeset_counter`) and the GPU's
(``fastff/kernels/cuda/shapeset.cu``).
"""
from functools import lru_cache

import numpy as np

from .errors import InputError

SIZE = 32
N_VERTICES = np.array([3, 4, 20], np.int64)  # triangle, parallelogram, ellipse
SCALE_MIN, SCALE_MAX = 0.2, 0.8
ROTATIONS = 255
OVERLAP_MAX = 0.5
REJECTION_MAX = 50
FG_LEVELS = (141, 255)  # ceil(0.55 * 255) .. 255
BG_LEVELS = (0, 114)    # 0 .. floor(0.45 * 255)

THETA_STEPS = 256  # the first rotation: 256 x 256 angles, cos and sin by angle addition
# angle_table's layout: offsets of cos(2 pi k / n) for the 3-, 4- and 20-gons, of the first
# rotation's coarse and fine steps, and of the 255 second rotations; each sine follows its cosine
TABLE_VERTEX_OFFSET = np.array([0, 3, 7], np.int64)
TABLE_VERTICES = 27
TABLE_COARSE = 2 * TABLE_VERTICES
TABLE_FINE = TABLE_COARSE + 2 * THETA_STEPS
TABLE_ROTATIONS = TABLE_COARSE + 4 * THETA_STEPS
TABLE_SIZE = TABLE_ROTATIONS + 2 * ROTATIONS


def check_stream(key, first, n):
    """Raise InputError unless ``key`` is two 32-bit words, ``n`` a number of images (>= 0) and
    ``first .. first + n - 1`` image indices of one stream (below 2^63): what both renderers
    take unchecked."""
    def integer(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
    if not (isinstance(key, (tuple, list)) and len(key) == 2
            and all(integer(w) and 0 <= w < 2 ** 32 for w in key)):
        raise InputError(f"key must be two 32-bit words (counter_key), got {key!r}")
    if not integer(n) or n < 0:
        raise InputError(f"n must be a number of images >= 0, got {n!r}")
    if not integer(first) or not 0 <= first < 2 ** 63 - n:
        raise InputError(f"first must be an image index >= 0, got {first!r}")


@lru_cache(maxsize=1)
def angle_table():
    """The cosines and sines both generators read (float64): computed here, once, by NumPy.

    Layout: cos then sin of 2 pi k / n for the 3-, 4- and 20-gon (27 each); cos then sin of the
    first rotation's 256 coarse steps 2 pi j / 256 and 256 fine steps 2 pi j / 65536; cos then
    sin of the 255 second rotations 2 pi j / 255.
    """
    k = np.concatenate([np.arange(n) / n for n in N_VERTICES])
    coarse = np.arange(THETA_STEPS) / THETA_STEPS
    fine = np.arange(THETA_STEPS) / THETA_STEPS ** 2
    rot = np.arange(ROTATIONS) / ROTATIONS
    parts = []
    for fraction in (k, coarse, fine, rot):
        angle = 2 * np.pi * fraction
        parts += [np.cos(angle), np.sin(angle)]
    table = np.concatenate(parts)
    assert table.shape == (TABLE_SIZE,)
    table.flags.writeable = False  # shared by every call
    return table
