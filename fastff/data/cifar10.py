"""CIFAR-10 readers, paper split 40,000 / 10,000 / 10,000 (reference section 2.2).

No package carries CIFAR-10; point ``data_dir`` (or ``$FASTFF_DATA``) at a directory holding
either standard layout:

* ``cifar-10-batches-py``: pickled dicts ``data_batch_1..5`` and ``test_batch`` with keys
  ``b'data'`` (n x 3072 uint8) and ``b'labels'``;
* ``cifar-10-batches-bin``: ``data_batch_1..5.bin`` and ``test_batch.bin``, 3073-byte records
  (1 label byte, then 3072 pixel bytes).

Inputs are flattened to 3072 values in [0, 1]; the last 10,000 training images are the
validation set.
"""
import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import ArrayDataset
from .sources import user_dirs

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
RECORD = 3073
N_TRAIN = 40_000


def _read_py(path):
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, EOFError, TypeError, ValueError) as exc:
        raise DataError(f"{path} is not a CIFAR-10 python batch: {exc}") from None
    if x.ndim != 2 or x.shape[1] != 3072 or x.shape[0] != y.shape[0]:
        raise DataError(f"{path}: expected data of shape (n, 3072) and n labels, got {x.shape}")
    return x, y


def _read_bin(path):
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(f"{path} has {raw.size} bytes, not a multiple of the {RECORD}-byte record")
    rec = raw.reshape(-1, RECORD)
    return rec[:, 1:].copy(), rec[:, 0].astype(np.int64)


def read_dir(root):
    """Read (train_x, train_y, test_x, test_y) from a directory in either layout (or its parent)."""
    root = Path(root)
    for sub, reader, suffix in (("cifar-10-batches-py", _read_py, ""),
                                ("cifar-10-batches-bin", _read_bin, ".bin")):
        for d in (root / sub, root):
            names = TRAIN_BATCHES + ["test_batch"]
            if all((d / (n + suffix)).is_file() for n in names):
                parts = [reader(d / (n + suffix)) for n in names]
                tx = np.concatenate([p[0] for p in parts[:-1]])
                ty = np.concatenate([p[1] for p in parts[:-1]])
                if ty.size and (ty.min() < 0 or ty.max() > 9):
                    raise DataError(f"{d}: labels outside 0..9")
                return tx, ty, parts[-1][0], parts[-1][1]
    raise DataError(f"no CIFAR-10 found in {root}: expected cifar-10-batches-py/ (data_batch_1..5, "
                    "test_batch) or cifar-10-batches-bin/ (data_batch_1..5.bin, test_batch.bin)")


def load(seed=0, data_dir=None, fetch=True):
    """CIFAR-10 with the paper's split, pixels in [0, 1], inputs of 3072 values."""
    dirs = user_dirs(data_dir)
    if not dirs:
        raise DataError("CIFAR-10 is not bundled by any package: download it yourself and pass "
                        "data_dir=DIR or set FASTFF_DATA=DIR (layout cifar-10-batches-py or "
                        "cifar-10-batches-bin)")
    tx, ty, sx, sy = read_dir(dirs[0])
    scale = np.float32(1 / 255.0)
    x = tx.astype(np.float32) * scale
    n_train = min(N_TRAIN, len(x) * 4 // 5)
    return ArrayDataset("cifar10", (x[:n_train], ty[:n_train]), (x[n_train:], ty[n_train:]),
                        (sx.astype(np.float32) * scale, sy), n_classes=10, seed=seed)
