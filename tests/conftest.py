import shutil
import subprocess
import zlib

import numpy as np
import pytest


def tolerance(dtype):
    """(atol, rtol) per dtype for kernel-vs-reference comparisons."""
    return (2e-5, 2e-4) if np.dtype(dtype) == np.float32 else (1e-11, 1e-9)


def assert_close(got, ref, dtype, scale=1.0):
    atol, rtol = tolerance(dtype)
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    bad = np.abs(got - ref) > atol * scale + rtol * np.abs(ref)
    assert not bad.any(), f"{bad.sum()} of {bad.size} differ; max abs diff {np.abs(got - ref).max():.3g}"


def numeric_grad(loss, p, eps=1e-6):
    """Central differences of ``loss()`` with respect to every entry of ``p`` (changed in place)."""
    num = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        old = p[idx]
        p[idx] = old + eps
        up = loss()
        p[idx] = old - eps
        down = loss()
        p[idx] = old
        num[idx] = (up - down) / (2 * eps)
    return num


def stable_seed(text):
    """A seed from a test's name that is the same in every process (``hash`` of a str is
    salted per process, so a failing seeded case could not be rerun)."""
    return zlib.crc32(text.encode())


@pytest.fixture
def rng(request):
    # a fresh seeded generator per test, different across tests, the same on every rerun
    return np.random.default_rng(stable_seed(request.node.name))


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiny block sizes so that small inputs span many chunks."""
    from fastff import config
    monkeypatch.setattr(config, "CPU_COL_CHUNK", 16)
    monkeypatch.setattr(config, "CPU_ROW_BLOCK", 8)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run where CuPy sees a GPU and are skipped, saying why, elsewhere."""
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    from fastff.device import cuda_status
    ok, reason = cuda_status()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: {reason}")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tsan_available(tmp_path_factory):
    """Skip unless g++ can build with ThreadSanitizer (the CUDA emulator's race checks);
    returns a folder the unbroken builds share (a build is cached there by its source)."""
    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    probe = tmp_path_factory.mktemp("tsan-probe") / "p.cpp"
    probe.write_text("int main() { return 0; }")
    out = subprocess.run(["g++", "-fsanitize=thread", str(probe), "-o", str(probe.with_suffix(""))],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"g++ has no ThreadSanitizer here: {out.stderr[-300:]}")
    return tmp_path_factory.mktemp("tsan-builds")
