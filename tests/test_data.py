"""Datasets: the Shapeset-3x2 generator, the MNIST IDX reader and sources, CIFAR-10 readers,
Small-ImageNet files, downloads and memory checks (no network: mirrors are file:// URLs)."""
import gzip
import hashlib
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest

from fastff import data
from fastff.data import cifar10, mnist, shapeset, small_imagenet, sources
from fastff.errors import DataError, InputError


@pytest.fixture(scope="module", params=["sequential", "counter"])
def sample(request):
    return shapeset.generate(20_000, seed=123, generator=request.param)


def test_shapeset_class_prior(sample):
    _, labels, _ = sample
    freq = np.bincount(labels, minlength=9) / labels.size
    expected = np.array([1 / 6] * 3 + [1 / 9] * 3 + [1 / 18] * 3)
    sigma = np.sqrt(expected * (1 - expected) / labels.size)
    assert (np.abs(freq - expected) < 4 * sigma).all(), freq


@pytest.mark.parametrize("generator", ["sequential", "counter"])
def test_shapeset_balanced_option(generator):
    _, labels, _ = shapeset.generate(9000, seed=5, balanced=True, generator=generator)
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


@pytest.mark.parametrize("generator", ["sequential", "counter"])
def test_shapeset_determinism_and_scaling(generator):
    a = shapeset.generate(50, seed=1, generator=generator)[0]
    b = shapeset.generate(50, seed=1, generator=generator)[0]
    c = shapeset.generate(50, seed=2, generator=generator)[0]
    assert (a == b).all() and not (a == c).all()
    x = shapeset.to_float(a, "symmetric")
    assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    with pytest.raises(InputError, match="valid: symmetric, unit"):
        shapeset.to_float(a, "zero-one")


@pytest.mark.parametrize("generator", ["sequential", "counter"])
def test_shapeset_dataset_random_access(generator):
    d = data.load("shapeset", seed=3, valid_size=50, test_size=60, generator=generator)
    assert d.valid[0].shape == (50, 1024) and d.test[0].shape == (60, 1024)
    x1, y1 = d.train_batch(99, 10)  # crosses no block boundary
    x2, y2 = d.train_batch(99, 10)
    np.testing.assert_array_equal(x1, x2)
    xa, _ = d.train_batch(33, 30)  # 990..1020 crosses the 1000-image block boundary
    xb = np.concatenate([d.train_batch(k, 10)[0] for k in (99, 100, 101)])
    np.testing.assert_array_equal(xa, xb)
    stream = data.shapeset_stream(seed=3, batch_size=10, generator=generator)
    np.testing.assert_array_equal(next(stream)[0], d.train_batch(0, 10)[0])


def test_philox_known_answers():
    # Random123's tests/kat_vectors, the three philox4x32 10 lines: counter, key, result
    from fastff.data.shapeset_counter import philox
    vectors = [((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
               ((0xffffffff,) * 4, (0xffffffff,) * 2,
                (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
               ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
                (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]
    for counter, key, expected in vectors:
        out = philox(*(np.uint64(c) for c in counter), *(np.uint64(k) for k in key))
        assert tuple(int(w) for w in out) == expected


def test_counter_images_depend_on_their_index_alone():
    images, labels, n_obj = shapeset.generate(300, seed=8, generator="counter")
    for first, n in ((0, 1), (17, 5), (123, 177), (299, 1)):
        part = shapeset.generate(n, seed=8, generator="counter", first=first)
        np.testing.assert_array_equal(part[0], images[first:first + n])
        np.testing.assert_array_equal(part[1], labels[first:first + n])
        np.testing.assert_array_equal(part[2], n_obj[first:first + n])
    # far into the stream (past 2^32 images: the counter's second word)
    far = shapeset.generate(3, seed=8, generator="counter", first=2 ** 32 - 1)
    assert far[0].shape == (3, 1024) and not np.array_equal(far[0][0], far[0][1])
    with pytest.raises(InputError, match="counter"):
        shapeset.generate(3, seed=8, first=5, generator="sequential")
    with pytest.raises(InputError, match="first"):
        shapeset.generate(3, seed=8, generator="counter", first=-1)
    with pytest.raises(InputError, match="valid: counter, sequential"):
        data.load("shapeset", generator="philox")


def test_counter_floats_are_the_levels_scaled():
    # the float images of the dataset are to_float of the uint8 levels, bit for bit
    d = data.load("shapeset", seed=6, valid_size=40, test_size=40, generator="counter",
                  scale="symmetric")
    levels, labels, _ = shapeset.render_counter(shapeset.counter_key(6, 1), 0, 40, False,
                                                (1.0, 0.0))
    assert set(np.unique(levels)) <= set(range(256))
    np.testing.assert_array_equal(d.valid[0],
                                  shapeset.to_float(levels.astype(np.uint8), "symmetric"))
    np.testing.assert_array_equal(d.valid[1], labels)


def test_the_two_generators_draw_the_same_objects():
    # same parameters, other streams: per class, the objects' pixel counts agree in mean
    # (a two-sample z-test per class) and the overlap rule holds in both
    stats = {}
    for generator in ("sequential", "counter"):
        images, labels, n_obj = shapeset.generate(20_000, seed=31, generator=generator)
        img = images.reshape(-1, 32, 32).astype(int)
        fg = (img != img[:, :1, :1]).sum(axis=(1, 2))
        stats[generator] = [fg[labels == c] for c in range(9)]
        assert 0.45 < (n_obj == 2).mean() < 0.52  # a few second objects are refused
    for a, b in zip(stats["sequential"], stats["counter"]):
        z = (a.mean() - b.mean()) / np.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(z) < 4.5, (a.mean(), b.mean())


def test_finite_shapeset_is_the_streams_first_images_in_epochs():
    online = data.load("shapeset", seed=4, valid_size=30, test_size=30)
    d = data.load("shapeset", seed=4, valid_size=30, test_size=30, finite=1_003)
    stream = np.concatenate([online.train_batch(k, 17)[0] for k in range(59)])[:1_003]
    np.testing.assert_array_equal(np.sort(d.finite.train[0], axis=0), np.sort(stream, axis=0))
    np.testing.assert_array_equal(d.valid[0], online.valid[0])  # the same evaluation sets
    # every epoch visits each image once, in a fresh order
    seen = np.concatenate([d.train_batch(k, 17)[0] for k in range(59)])  # exactly one epoch
    assert len(np.unique(seen, axis=0)) == len(np.unique(stream, axis=0))
    first, second = d.train_batch(0, 17)[0], d.train_batch(59, 17)[0]
    assert not np.array_equal(first, second)
    for bad in (0, -5, 2.5):
        with pytest.raises(InputError, match="finite"):
            data.load("shapeset", valid_size=5, test_size=5, finite=bad)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(InputError, match="valid: cifar10, mnist, shapeset, small_imagenet"):
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


def test_cifar10_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFF_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        cifar10.load(data_dir=tmp_path, fetch=False)
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    for name in cifar10.TRAIN_BATCHES + ["test_batch"]:
        (root / (name + ".bin")).write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="3073-byte"):
        cifar10.load(data_dir=tmp_path)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTFF_DATA", raising=False)
    return tmp_path / "cache"


def test_mnist_downloads_from_a_mirror_into_the_cache(tmp_path, offline_cache, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    files = {}
    for name, n in zip(mnist.FILES, (7, 7, 3, 3)):
        a = np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2) if "images" in name else np.arange(n, dtype=np.uint8) % 10
        write_idx(mirror / (name + ".gz"), a, gz=True)
        files[name] = sources.md5(mirror / (name + ".gz"))
    monkeypatch.setattr(mnist, "FILES", files)
    monkeypatch.setattr(mnist, "MIRRORS", ["file:///nonexistent/", mirror.as_uri() + "/"])
    monkeypatch.setattr(mnist, "npm_pack", lambda *a, **k: pytest.fail("npm must not be needed"))
    found = mnist.locate()
    assert all(p.parent == offline_cache / "mnist" for p in found.values())
    x = mnist.read_idx(found["train-images-idx3-ubyte"])
    assert x.shape == (7, 2, 2)
    assert mnist.locate(fetch=False) == found  # the cache is used next time


def test_download_keeps_nothing_when_the_checksum_fails(tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"some bytes")
    dest = tmp_path / "cache" / "f.bin"
    with pytest.raises(DataError, match="MD5"):
        sources.download(src.as_uri(), dest, "0" * 32, progress=False)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    with pytest.raises(DataError, match="failed"):
        sources.download((tmp_path / "missing").as_uri(), dest, "0" * 32, progress=False)
    good = sources.download(src.as_uri(), dest, hashlib.md5(b"some bytes").hexdigest(), progress=False)
    assert good.read_bytes() == b"some bytes"


def test_cifar10_downloads_and_unpacks_into_the_cache(tmp_path, offline_cache, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in cifar10.TRAIN_BATCHES + ["test_batch"]:
            x, y = fake_cifar(5)
            payload = pickle.dumps({b"data": x, b"labels": list(y)})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(buf.getvalue())
    monkeypatch.setattr(cifar10, "URL", archive.as_uri())
    monkeypatch.setattr(cifar10, "URL_MD5", hashlib.md5(buf.getvalue()).hexdigest())
    d = cifar10.load()
    assert d.train[0].shape == (20, 3072) and d.test[0].shape == (5, 3072)
    assert (offline_cache / "cifar10" / "cifar-10-batches-py" / "test_batch").is_file()
    assert sorted(p.name for p in (offline_cache / "cifar10").iterdir()) == ["cifar-10-batches-py"]


def write_small_imagenet(path, n=(8, 4, 4), x_dtype=np.uint8, flat=False, **override):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(small_imagenet.SPLITS, n):
        shape = (k, 1369) if flat else (k, 37, 37)
        x = rng.integers(0, 256, shape).astype(np.uint8)
        arrays[f"x_{split}"] = x if x_dtype == np.uint8 else (x / 255.0).astype(x_dtype)
        arrays[f"y_{split}"] = rng.integers(0, 10, k)
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


@pytest.mark.parametrize("x_dtype, flat", [(np.uint8, False), (np.float32, True)])
def test_small_imagenet_reader(tmp_path, x_dtype, flat):
    arrays = write_small_imagenet(tmp_path / "small_imagenet.npz", x_dtype=x_dtype, flat=flat)
    d = data.load("small_imagenet", data_dir=tmp_path)
    assert d.n_in == 37 * 37 and d.n_classes == 10
    assert d.train[0].shape == (8, 1369) and d.valid[0].shape == (4, 1369)
    assert d.train[0].dtype == np.float32 and 0 <= d.train[0].min() and d.train[0].max() <= 1
    np.testing.assert_allclose(d.test[0], arrays["x_test"].reshape(4, -1) / (255.0 if x_dtype == np.uint8 else 1),
                               rtol=1e-6)
    np.testing.assert_array_equal(d.test[1], arrays["y_test"])


@pytest.mark.parametrize("override, match", [
    (dict(y_valid=None), "lacks the arrays y_valid"),
    (dict(x_train=np.zeros((8, 32, 32), np.uint8)), r"x_train has shape \(8, 32, 32\)"),
    (dict(y_test=np.zeros(5, np.int64)), r"y_test has shape \(5,\)"),
    (dict(y_train=np.full(8, 10)), "labels in y_train"),
    (dict(x_test=np.full((4, 37, 37), 2.0)), "in \\[0, 1\\]"),
])
def test_small_imagenet_bad_files(tmp_path, override, match):
    write_small_imagenet(tmp_path / "small_imagenet.npz", **override)
    with pytest.raises(DataError, match=match):
        small_imagenet.load(data_dir=tmp_path)


def test_small_imagenet_missing_or_not_npz(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTFF_DATA", raising=False)
    with pytest.raises(DataError, match="no public copy.*x_train"):
        small_imagenet.load(data_dir=tmp_path)
    (tmp_path / "x.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable .npz"):
        small_imagenet.load(path=tmp_path / "x.npz")


def test_sizes_that_do_not_fit_memory_fail_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "available_memory", lambda: 1 << 20)  # 1 MiB
    with pytest.raises(DataError, match="GiB of memory is available"):
        shapeset.Shapeset(valid_size=10_000_000, test_size=10)
    write_small_imagenet(tmp_path / "small_imagenet.npz", n=(300, 4, 4))
    with pytest.raises(DataError, match="memory"):
        small_imagenet.load(data_dir=tmp_path)
