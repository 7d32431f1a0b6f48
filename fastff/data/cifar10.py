"""CIFAR-10 readers, paper split 40,000 / 10,000 / 10,000 (the paper's §2.2).

Sources tried in order: a directory you give (``data_dir=`` or ``$FASTFF_DATA``), the cache
(``~/.cache/fastff/cifar10``), and, when online, the usual archive (:data:`URL`, MD5-checked)
unpacked into the cache. A directory may hold either standard layout:

* ``cifar-10-batches-py``: pickled dicts ``data_batch_1..5`` and ``test_batch`` with keys
  ``b'data'`` (n x 3072 uint8) and ``b'labels'``;
* ``cifar-10-batches-bin``: ``data_batch_1..5.bin`` and ``test_batch.bin``, 3073-byte records
  (1 label byte, then 3072 pixel bytes).

Inputs are flattened to 3072 values in [0, 1]; the last 10,000 training images are the
validation set.
"""
import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import ArrayDataset
from .sources import cache_dir, check_fits_memory, download, safe_extract, user_dirs

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
URL_MD5 = "c58f30108f718f92721af3b95e74349a"

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


def _has_layout(d):
    d = Path(d)
    return any((d / sub).is_dir() for sub in ("cifar-10-batches-py", "cifar-10-batches-bin")) or \
        (d / "test_batch").is_file() or (d / "test_batch.bin").is_file()


def fetch_to_cache(timeout=30):
    """Download the python-layout archive, check its MD5 and unpack it into the cache.

    The archive is unpacked in a temporary directory and renamed into place, so the cache
    never holds a half-unpacked copy. Returns the cache directory.
    """
    root = cache_dir() / "cifar10"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = download(URL, Path(tmp) / "cifar-10-python.tar.gz", URL_MD5, timeout=timeout,
                           uncompressed=False)  # URL_MD5 is the archive's own
        try:
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        safe_extract(tar, member, tmp)
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{URL} could not be unpacked: {exc}") from None
        target = root / "cifar-10-batches-py"
        if target.exists():
            shutil.rmtree(target)
        os.replace(Path(tmp) / "cifar-10-batches-py", target)
    return root


def load(seed=0, data_dir=None, fetch=True):
    """CIFAR-10 with the paper's split, pixels in [0, 1], inputs of 3072 values."""
    dirs = [d for d in [*user_dirs(data_dir), cache_dir() / "cifar10"] if _has_layout(d)]
    if dirs:
        root = dirs[0]
    else:
        tried = ""
        if fetch:
            try:
                root = fetch_to_cache()
                tried = None
            except DataError as exc:
                tried = f" (download failed: {exc})"
        if tried is not None:
            raise DataError("CIFAR-10 not found: pass data_dir=DIR or set FASTFF_DATA=DIR to a "
                            "directory holding cifar-10-batches-py/ (data_batch_1..5, test_batch) "
                            "or cifar-10-batches-bin/ (data_batch_1..5.bin, test_batch.bin)" + tried)
    tx, ty, sx, sy = read_dir(root)
    check_fits_memory(4 * (tx.size + sx.size), "CIFAR-10 as float32")
    scale = np.float32(1 / 255.0)
    x = tx.astype(np.float32) * scale
    n_train = min(N_TRAIN, len(x) * 4 // 5)
    return ArrayDataset("cifar10", (x[:n_train], ty[:n_train]), (x[n_train:], ty[n_train:]),
                        (sx.astype(np.float32) * scale, sy), n_classes=10, seed=seed)
