"""Small-ImageNet (the paper's §2.2): 37x37 grey images, 10 classes, from your own file.

The paper's Small-ImageNet has no public copy, so fastff reads a ``.npz`` you provide, found as
``small_imagenet.npz`` in ``data_dir`` (or ``$FASTFF_DATA``), or given directly as ``path=``.
It must hold six arrays:

==========================  ====================================================================
``x_train``, ``x_valid``,   images, (n, 37, 37) or (n, 1369); uint8 in 0..255, or float in [0, 1]
``x_test``
``y_train``, ``y_valid``,   class ids, (n,) integers in 0..9
``y_test``
==========================  ====================================================================

Images are flattened to 1369 values in [0, 1] (float32). Shapes, dtypes and label ranges are
checked, and the memory the arrays need is checked before they are read.
"""
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import ArrayDataset
from .sources import check_fits_memory, user_dirs

FILE = "small_imagenet.npz"
SIDE = 37
N_CLASSES = 10
SPLITS = ("train", "valid", "test")
ARRAYS = tuple(f"{p}_{s}" for s in SPLITS for p in ("x", "y"))


def _headers(path):
    """{name: (shape, dtype)} of the arrays in an .npz, read without loading them."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                out[name] = (shape, dtype)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npz file: {exc}") from None
    return out


def _find(path, data_dir):
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p} does not exist")
        return p
    for d in user_dirs(data_dir):
        if (d / FILE).is_file():
            return d / FILE
    raise DataError(
        f"Small-ImageNet has no public copy: provide {FILE} in data_dir=DIR or $FASTFF_DATA "
        f"(or pass path=FILE) holding {', '.join(ARRAYS)}; images (n, 37, 37) or (n, 1369), "
        "uint8 or float in [0, 1]; labels 0..9 (see fastff.data.small_imagenet)")


def load(seed=0, data_dir=None, fetch=True, path=None):
    """Small-ImageNet from a user-provided .npz (see the module docstring)."""
    p = _find(path, data_dir)
    heads = _headers(p)
    missing = [a for a in ARRAYS if a not in heads]
    if missing:
        raise DataError(f"{p} lacks the arrays {', '.join(missing)} (needs {', '.join(ARRAYS)})")
    need = 0
    for s in SPLITS:
        (xs, xd), (ys, yd) = heads[f"x_{s}"], heads[f"y_{s}"]
        if not (len(xs) in (2, 3) and tuple(xs[1:]) in ((SIDE, SIDE), (SIDE * SIDE,))):
            raise DataError(f"{p}: x_{s} has shape {xs}, expected (n, 37, 37) or (n, 1369)")
        if len(ys) != 1 or ys[0] != xs[0]:
            raise DataError(f"{p}: y_{s} has shape {ys}, expected ({xs[0]},)")
        if xd.kind not in "uf" or yd.kind not in "iu":
            raise DataError(f"{p}: x_{s} must be uint8 or float and y_{s} integers, "
                            f"got {xd} and {yd}")
        need += xs[0] * SIDE * SIDE * (4 + xd.itemsize)
    check_fits_memory(need, f"{p}")
    with np.load(p, allow_pickle=False) as z:
        splits = [_split(p, s, z[f"x_{s}"], z[f"y_{s}"]) for s in SPLITS]
    return ArrayDataset("small_imagenet", *splits, n_classes=N_CLASSES, seed=seed)


def _split(path, name, x, y):
    x = x.reshape(len(x), SIDE * SIDE)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) * np.float32(1 / 255.0)
    else:
        if x.dtype.kind != "f":
            raise DataError(f"{path}: x_{name} must be uint8 or float, got {x.dtype}")
        x = x.astype(np.float32)
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError(f"{path}: float images in x_{name} must be finite and in [0, 1]")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= N_CLASSES):
        raise DataError(f"{path}: labels in y_{name} must be in 0..{N_CLASSES - 1}")
    return x, y
