"""The run record: one directory per run, files a person opens with pandas or an image viewer.

``config.json``    everything needed to rerun (seed and versions included)
``metrics.csv``    tidy: one row per update x source x layer x statistic (see :data:`COLUMNS`)
``stats.npz``      the monitor's snapshots: per-layer scalars and histograms over training
``checkpoint.npz`` parameters, update count and history, written atomically
``pretrain.csv``   the pre-training phase, when there is one (:mod:`fastff.training.pretrain`)

Every file is rewritten whole through a temporary name and a rename, so a run directory never
holds half a file, even when the process dies mid-write.
"""
import csv
import io
import json
import os
import platform
import shutil
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import InputError, RecordError
from .files import atomic_write_bytes  # noqa: F401  (re-exported: the writer of run files)

# Every file and folder a run (and its report and exports) writes into its directory: what an
# overwrite removes, and what makes a directory "hold a run".
# pretrain.csv's columns: one row per logged interval and layer of the pre-training phase
PRETRAIN_COLUMNS = ("layer", "update", "examples", "reconstruction", "sat_low", "sat_high",
                    "mean", "std", "seconds")
RUN_FILES = ("config.json", "metrics.csv", "stats.npz", "checkpoint.npz", "pretrain.csv",
             "sweep_status.json", "test_outcomes.npz")
RUN_FOLDERS = ("figures", "tensorboard")
# What reading a damaged .npz or .json can raise, besides OSError.
_DAMAGED = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error)

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


def versions():
    """Versions of the software that produced a run."""
    import numba
    from ._version import __version__
    return {"fastff": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "python": platform.python_version()}


def thread_counts():
    """Threads of the compiled kernels (Numba) and of the BLAS library, and that library, as far
    as known.

    Above the small-batch limit a step uses BLAS, whose sums can change in their last bits with
    its thread count and between libraries (OpenBLAS, oneMKL:
    :func:`fastff.kernels.cpu.blas.library`); a run records these and a resume warns when they
    differ.
    """
    import numba
    from .kernels.cpu.blas import library
    out = {"numba": int(numba.get_num_threads()), "blas_library": library()}
    try:
        from threadpoolctl import threadpool_info
        found = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        ours = [p for p in found if p.get("internal_api") == out["blas_library"]] or found
        out["blas"] = int(ours[0]["num_threads"]) if ours else None
    except ImportError:  # threadpoolctl is a dependency, but the record must not need it
        out["blas"] = None
    return out


class RunDir:
    """Reader and writer of one run directory."""

    def __init__(self, path):
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"a run directory must be a path, got {type(path).__name__}")
        self.path = Path(path)

    @property
    def checkpoint_path(self):
        return self.path / "checkpoint.npz"

    def run_files(self):
        """The names of the run files and folders present in the directory."""
        if not self.path.is_dir():
            return []
        return [n for n in RUN_FILES + RUN_FOLDERS if (self.path / n).exists()]

    def holds_run(self):
        """True when the directory holds any file of a run."""
        return any((self.path / n).exists() for n in RUN_FILES)

    def stopped_before_first_checkpoint(self):
        """True when the directory holds a run that stopped before its first checkpoint (a
        Ctrl-C while its kernels compiled or it pre-trained): run files, but no checkpoint
        and no metrics, so nothing that a resume could continue."""
        return (self.holds_run() and not self.checkpoint_path.is_file()
                and not (self.path / "metrics.csv").is_file())

    def prepare(self):
        """Make the directory (and its parents); a clear error when it cannot be one."""
        if self.path.exists() and not self.path.is_dir():
            raise RecordError(f"{self.path} exists and is not a directory; choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordError(f"cannot create the run directory {self.path}: {exc}") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise RecordError(f"the run directory {self.path} is not writable")

    def clear(self):
        """Remove every file and folder of a previous run (and nothing else)."""
        for name in RUN_FILES + RUN_FOLDERS:
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        for tmp in self.path.glob("*.tmp"):  # left by a process killed mid-write
            tmp.unlink()

    def write_config(self, config):
        atomic_write_bytes(self.path / "config.json",
                           json.dumps(config, indent=2, sort_keys=True).encode())

    def read_config(self):
        p = self.path / "config.json"
        if not p.is_file():
            raise RecordError(f"{self.path} is not a fastff run: config.json is missing")
        try:
            config = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise RecordError(f"{p} is damaged (not readable JSON: {exc}); it cannot be "
                              "resumed or reported") from None
        missing = [k for k in ("arch", "activation", "init", "batch_size", "updates")
                   if not isinstance(config, dict) or k not in config]
        if missing:
            raise RecordError(f"{p} is not a fastff run configuration: "
                              f"{', '.join(missing)} missing")
        return config

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
            raise RecordError(f"{self.path} is not a complete fastff run: metrics.csv is missing")
        try:
            with open(p, newline="") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != COLUMNS:
                    raise RecordError(f"{p} does not have the columns {', '.join(COLUMNS)}")
                return [dict(update=int(r["update"]), examples=int(r["examples"]),
                             source=r["source"], layer=int(r["layer"]),
                             statistic=r["statistic"], value=float(r["value"])) for r in reader]
        except (OSError, ValueError, TypeError, csv.Error) as exc:
            raise RecordError(f"{p} is damaged: {type(exc).__name__}: {exc}") from None

    def write_pretrain(self, rows):
        """Rewrite pretrain.csv from the pre-training log (atomic)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, PRETRAIN_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path / "pretrain.csv", buf.getvalue().encode())

    def read_pretrain(self):
        """pretrain.csv as a list of dicts of numbers; empty when the run was not pre-trained."""
        p = self.path / "pretrain.csv"
        if not p.is_file():
            return []
        try:
            with open(p, newline="") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != PRETRAIN_COLUMNS:
                    raise RecordError(f"{p} does not have the columns {', '.join(PRETRAIN_COLUMNS)}")
                return [{k: (int(v) if k in ("layer", "update", "examples") else float(v))
                         for k, v in r.items()} for r in reader]
        except (OSError, ValueError, TypeError, csv.Error) as exc:
            raise RecordError(f"{p} is damaged: {type(exc).__name__}: {exc}") from None

    @property
    def stats_path(self):
        return self.path / "stats.npz"

    @property
    def outcomes_path(self):
        return self.path / "test_outcomes.npz"

    def save_test_outcomes(self, update, correct):
        """Which test examples the model at ``update`` classifies correctly (a boolean per
        example, packed 8 to a byte), atomically: the paired data of McNemar's test
        (:mod:`fastff.reproduction.table`)."""
        correct = np.asarray(correct, bool)
        buf = io.BytesIO()
        np.savez(buf, update=np.int64(update), n=np.int64(correct.size),
                 correct=np.packbits(correct))
        atomic_write_bytes(self.outcomes_path, buf.getvalue())

    def load_test_outcomes(self):
        """(update, boolean array) of the last evaluation's test outcomes, or None when the run
        has none (recorded before they were kept)."""
        p = self.outcomes_path
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                update, n, bits = int(z["update"]), int(z["n"]), z["correct"]
            if n < 0 or bits.dtype != np.uint8 or bits.size != -(-n // 8):
                raise ValueError(f"{n} outcomes in {bits.size} bytes")
        except _DAMAGED as exc:
            raise RecordError(f"{p} cannot be read (damaged, truncated or not fastff test "
                              f"outcomes: {type(exc).__name__}: {exc})") from None
        return update, np.unpackbits(bits, count=n).astype(bool)

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
            with np.load(self.stats_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except _DAMAGED as exc:
            raise RecordError(f"{self.stats_path} cannot be read (damaged or truncated: "
                              f"{type(exc).__name__}: {exc})") from None
        try:
            return Stats.from_arrays(arrays)
        except InputError as exc:
            raise RecordError(f"{self.stats_path} cannot be read: {exc}") from None

    def save_checkpoint(self, model, update, history, extra=None):
        """Parameters, update count and history, and ``extra`` (a dict of host arrays: the
        per-parameter rates' state of :meth:`fastff.model.Rates.state`, the pending state of a
        checkpoint between evaluations, :mod:`fastff.training.resume`), atomically."""
        buf = io.BytesIO()
        np.savez(buf, update=np.int64(update), history=np.array(json.dumps(history)),
                 **model.state(), **(extra or {}))
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def load_checkpoint(self):
        """(state dict, update, history) of the last checkpoint."""
        p = self.checkpoint_path
        if not p.is_file():
            raise RecordError(f"no checkpoint in {self.path}")
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            update = int(arrays.pop("update"))
            history = json.loads(str(arrays.pop("history")))
        except _DAMAGED as exc:
            raise RecordError(f"{p} cannot be read (damaged, truncated or not a fastff "
                              f"checkpoint: {type(exc).__name__}: {exc})") from None
        # between evaluations, the losses since the last one make up the difference
        pending = arrays.get("pending_losses")
        since = 0 if pending is None else (pending.shape[0] if pending.ndim == 1 else -1)
        if (update < 0 or not isinstance(history, list) or not history
                or not all(isinstance(h, dict) and "update" in h for h in history)
                or history[-1]["update"] + since != update):
            raise RecordError(f"{p} is not a consistent fastff checkpoint: its history does not "
                              f"end at its update {update}")
        return arrays, update, history
