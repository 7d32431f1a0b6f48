"""The run record: one directory per run, files a person opens with pandas or an image viewer.

``config.json``    everything needed to rerun (seed and versions included)
``metrics.csv``    tidy: one row per update x source x layer x statistic (see :data:`COLUMNS`)
``stats.npz``      the monitor's snapshots: per-layer scalars and histograms over training
``checkpoint.npz`` parameters, update count and history, written atomically

Every file is rewritten whole through a temporary name and a rename, so a run directory never
holds half a file, even when the process dies mid-write.
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

# metrics.csv columns. ``source`` says where a value comes from: ``train`` (the per-step kernel
# statistics and the loss, averaged over the updates since the previous row), ``eval``
# (validation and test error) or ``monitor`` (the fixed monitor set, see fastff.monitor).
# ``layer`` 0 is the whole network, 1 the first hidden layer.
COLUMNS = ("update", "examples", "source", "layer", "statistic", "value")
_NETWORK_KEYS = {"train_loss": ("train", "loss"), "seconds": ("train", "seconds"),
                 "monitor_seconds": ("monitor", "seconds"),
                 "valid_error": ("eval", "valid_error"), "test_error": ("eval", "test_error")}


def history_rows(history):
    """Tidy rows of a wide history (``Run.history``), in the order of :data:`COLUMNS`."""
    for row in history:
        u, n = row["update"], row["examples"]
        for key, value in row.items():
            if key in _NETWORK_KEYS:
                source, name = _NETWORK_KEYS[key]
                yield (u, n, source, 0, name, value)
            elif key.startswith("L") and "_" in key:
                layer, name = key[1:].split("_", 1)
                yield (u, n, "train", int(layer), name, value)


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


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

    def write_metrics(self, history, stats=None):
        """Rewrite metrics.csv, tidy, from the whole history and monitor stats (atomic)."""
        rows = list(history_rows(history))
        if stats is not None:
            rows += list(stats.rows())
        rows.sort(key=lambda r: (r[0], r[2], r[3]))  # stable: keeps statistic order
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        atomic_write_bytes(self.path / "metrics.csv", buf.getvalue().encode())

    def read_metrics(self):
        """metrics.csv as a list of dicts with typed values."""
        p = self.path / "metrics.csv"
        if not p.is_file():
            raise InputError(f"{self.path} is not a complete fastff run: metrics.csv is missing")
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise InputError(f"{p} does not have the columns {', '.join(COLUMNS)}")
            return [dict(update=int(r["update"]), examples=int(r["examples"]),
                         source=r["source"], layer=int(r["layer"]), statistic=r["statistic"],
                         value=float(r["value"])) for r in reader]

    @property
    def stats_path(self):
        return self.path / "stats.npz"

    def save_stats(self, stats):
        """Write the monitor's snapshots to stats.npz (atomic)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **stats.to_arrays())
        atomic_write_bytes(self.stats_path, buf.getvalue())

    def load_stats(self):
        """The monitor's snapshots (:class:`fastff.monitor.Stats`); empty when none exist."""
        from .monitor import Stats
        if not self.stats_path.is_file():
            return Stats()
        try:
            with np.load(self.stats_path) as z:
                return Stats.from_arrays({k: z[k] for k in z.files})
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.stats_path} cannot be read: {exc}") from None

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
