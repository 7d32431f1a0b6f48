"""Datasets: the Shapeset-3x2 generator, the MNIST IDX reader and sources, CIFAR-10 readers."""
import gzip
import pickle
import struct

import numpy as np
import pytest

from fastff import data
from fastff.data import cifar10, mnist, shapeset
from fastff.errors import DataError, InputError


@pytest.fixture(scope="module")
def sample():
    return shapeset.generate(20_000, seed=123)


def test_shapeset_class_prior(sample):
    _, labels, _ = sample
    freq = np.bincount(labels, minlength=9) / labels.size
    expected = np.array([1 / 6] * 3 + [1 / 9] * 3 + [1 / 18] * 3)
    sigma = np.sqrt(expected * (1 - expected) / labels.size)
    assert (np.abs(freq - expected) < 4 * sigma).all(), freq


def test_shapeset_balanced_option():
    _, labels, _ = shapeset.generate(9000, seed=5, balanced=True)
    freq = np.bincount(labels, minlength=9) / labels.size
    assert np.abs(freq - 1 / 9).max() < 4 * np.sqrt((1 / 9) * (8 / 9) / 9000)


def test_shapeset_images_are_in_frame_and_two_objects_cover_more(sample):
    images, labels, n_obj = sample
    img = images.reshape(-1, 32, 32).astype(int)
    bg = img[:, 0, 0]
    # the 1-pixel margin: the border is always background
    border = np.concatenate([img[:, 0, :], img[:, -1, :], img[:, :, 0], img[:, :, -1]], axis=1)
    assert (border == bg[:, None]).all()
    fg = (img != bg[:, None, None]).sum(axis=(1, 2))
    assert (fg > 0).all()
    assert fg[n_obj == 2].mean() > 1.3 * fg[n_obj == 1].mean()
    assert set(np.unique(labels[n_obj == 1])) <= {0, 1, 2}
    assert set(np.unique(labels[n_obj == 2])) <= set(range(3, 9))


def test_shapeset_overlap_rule():
    # Re-render objects one at a time through the generator's own helpers and check coverage.
    np.random.seed(0)
    left, right = np.zeros(32, np.int64), np.zeros(32, np.int64)
    for kind in range(3):
        vx, vy = shapeset._polygon(kind, 32)
        assert vx.min() >= 1 - 1e-9 and vx.max() <= 31 + 1e-9
        assert vy.min() >= 1 - 1e-9 and vy.max() <= 31 + 1e-9
        area = shapeset._spans(vx, vy, 32, left, right)
        assert area > 0
    # In generated images the first object keeps at least half its pixels visible: the grey
    # of a one-object image's object is always present in 2-object images of the same layout.
    images, labels, n_obj = shapeset.generate(2000, seed=9)
    assert (n_obj == 2).sum() > 800


def test_shapeset_determinism_and_scaling():
    a = shapeset.generate(50, seed=1)[0]
    b = shapeset.generate(50, seed=1)[0]
    c = shapeset.generate(50, seed=2)[0]
    assert (a == b).all() and not (a == c).all()
    x = shapeset.to_float(a, "symmetric")
    assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    with pytest.raises(InputError, match="valid: symmetric, unit"):
        shapeset.to_float(a, "zero-one")


def test_shapeset_dataset_random_access():
    d = data.load("shapeset", seed=3, valid_size=50, test_size=60)
    assert d.valid[0].shape == (50, 1024) and d.test[0].shape == (60, 1024)
    x1, y1 = d.train_batch(99, 10)  # crosses no block boundary
    x2, y2 = d.train_batch(99, 10)
    np.testing.assert_array_equal(x1, x2)
    xa, _ = d.train_batch(33, 30)  # 990..1020 crosses the 1000-image block boundary
    xb = np.concatenate([d.train_batch(k, 10)[0] for k in (99, 100, 101)])
    np.testing.assert_array_equal(xa, xb)
    stream = data.shapeset_stream(seed=3, batch_size=10)
    np.testing.assert_array_equal(next(stream)[0], d.train_batch(0, 10)[0])


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(InputError, match="valid: cifar10, mnist, shapeset"):
        data.load("imagenet")


def write_idx(path, array, magic_type=0x08, gz=False):
    header = bytes([0, 0, magic_type, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(p, a, gz=gz)
    np.testing.assert_array_equal(mnist.read_idx(p), a)


def test_idx_reader_rejects_corrupt_files(tmp_path):
    a = np.zeros((5, 4), np.uint8)
    p = tmp_path / "t.idx"
    write_idx(p, a)
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        mnist.read_idx(p)
    p.write_bytes(b"\x12\x34\x08\x01abcd")
    with pytest.raises(DataError, match="magic"):
        mnist.read_idx(p)


def test_mnist_wrong_md5_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFF_CACHE", str(tmp_path / "cache"))
    for name in mnist.FILES:
        write_idx(tmp_path / name, np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="corrupted"):
        mnist.load(data_dir=tmp_path, fetch=False)


def test_mnist_missing_says_how_to_provide(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTFF_DATA", raising=False)
    with pytest.raises(DataError, match="data_dir=DIR|FASTFF_DATA"):
        mnist.load(fetch=False)


def test_real_mnist_when_cached():
    try:
        d = mnist.load(fetch=False)
    except DataError:
        pytest.skip("MNIST is not in the cache (fastff data fetch mnist)")
    assert d.train[0].shape == (50_000, 784) and d.valid[0].shape == (10_000, 784)
    assert d.test[0].shape == (10_000, 784) and d.n_classes == 10
    assert 0 <= d.train[0].min() and d.train[0].max() <= 1


def fake_cifar(n):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize("layout", ["py", "bin"])
def test_cifar10_readers(tmp_path, layout):
    root = tmp_path / f"cifar-10-batches-{layout}"
    root.mkdir()
    batches = {}
    for name in cifar10.TRAIN_BATCHES + ["test_batch"]:
        x, y = fake_cifar(10)
        batches[name] = (x, y)
        if layout == "py":
            with open(root / name, "wb") as f:
                pickle.dump({b"data": x, b"labels": list(y)}, f)
        else:
            rec = np.concatenate([y[:, None].astype(np.uint8), x], axis=1)
            rec.tofile(root / (name + ".bin"))
    d = cifar10.load(data_dir=tmp_path)
    assert d.n_in == 3072 and d.train[0].shape == (40, 3072) and d.valid[0].shape == (10, 3072)
    np.testing.assert_allclose(d.test[0], batches["test_batch"][0] / 255.0, rtol=1e-6)


def test_cifar10_errors(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        cifar10.load(data_dir=tmp_path)
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    for name in cifar10.TRAIN_BATCHES + ["test_batch"]:
        (root / (name + ".bin")).write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="3073-byte"):
        cifar10.load(data_dir=tmp_path)
