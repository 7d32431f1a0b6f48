"""The run record: one directory per run, files a person opens with pandas or an image viewer.

``config.json``   everything needed to rerun (seed and versions included)
``metrics.csv``   one row per evaluation: update, examples, loss, errors, per-layer scalars
``checkpoint.npz`` parameters, update count and history, written atomically
"""
import csv
import io
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputError


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def versions():
    """Versions of the software that produced a run."""
    import numba
    from . import __version__
    return {"fastff": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "python": platform.python_version()}


class RunDir:
    """Reader and writer of one run directory."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def checkpoint_path(self):
        return self.path / "checkpoint.npz"

    def write_config(self, config):
        atomic_write_bytes(self.path / "config.json",
                           json.dumps(config, indent=2, sort_keys=True).encode())

    def read_config(self):
        p = self.path / "config.json"
        if not p.is_file():
            raise InputError(f"{self.path} is not a fastff run: config.json is missing")
        return json.loads(p.read_text())

    def write_metrics(self, history):
        """Rewrite metrics.csv from the whole history (atomic; resumes stay consistent)."""
        if not history:
            return
        fields = list(history[0])
        for row in history[1:]:
            fields += [k for k in row if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_bytes(self.path / "metrics.csv", buf.getvalue().encode())

    def save_checkpoint(self, model, update, history):
        buf = io.BytesIO()
        np.savez(buf, update=np.int64(update), history=np.array(json.dumps(history)),
                 **model.state())
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def load_checkpoint(self):
        """(state dict, update, history) of the last checkpoint."""
        if not self.checkpoint_path.is_file():
            raise InputError(f"no checkpoint in {self.path}")
        with np.load(self.checkpoint_path) as z:
            state = {k: z[k] for k in z.files if k not in ("update", "history")}
            return state, int(z["update"]), json.loads(str(z["history"]))
