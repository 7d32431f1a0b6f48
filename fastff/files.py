"""Writing files safely: whole or not at all, with the permissions a user expects."""
import os
import tempfile
from pathlib import Path


def usual_permissions(path):
    """Give ``path`` the mode a plain ``open()`` would (0666 less the umask): temporary files
    from :mod:`tempfile` are created 0600, and a file renamed into place keeps that mode."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        usual_permissions(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
