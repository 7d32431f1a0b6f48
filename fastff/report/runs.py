"""Reading finished (or running) run directories for the report, with clear errors."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..monitor import Stats
from ..record import RunDir
from ..training.options import check_saved


@dataclass
class RunData:
    """What the figures need from one run directory."""

    path: Path
    config: dict
    metrics: list
    stats: Stats
    title: str = ""
    pretrain: list = None

    @property
    def label(self):
        """``title`` when given, else the activation, init and folder name."""
        c = self.config
        return self.title or f"{c['activation']} {c['init']} ({self.path.name})"

    @property
    def batch_size(self):
        return int(self.config["batch_size"])

    @property
    def n_hidden(self):
        return len(self.config["arch"]) - 2

    def series(self, source, statistic, layer=0):
        """(updates, values) of one statistic of metrics.csv, in update order."""
        rows = [r for r in self.metrics if r["source"] == source and r["statistic"] == statistic
                and r["layer"] == layer]
        return (np.array([r["update"] for r in rows], dtype=np.int64),
                np.array([r["value"] for r in rows], dtype=np.float64))


def load_run(path, title=""):
    """Read a run directory; say exactly what is missing when it is not a (complete) run.
    ``title`` names the run in figures (default: its activation, init and folder)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path} is not a directory")
    rd = RunDir(path)
    present = {p.name for p in path.iterdir()}
    if "config.json" not in present:
        found = ", ".join(sorted(present)) or "nothing"
        raise InputError(f"{path} is not a fastff run: config.json is missing (found: {found})")
    config = check_saved(rd.read_config(), path / "config.json")
    missing = [f for f in ("metrics.csv",) if f not in present]
    if config.get("monitor_every", 0) and "stats.npz" not in present:
        missing.append("stats.npz")
    if missing:
        raise InputError(f"{path} is a half-written fastff run: {', '.join(missing)} "
                         "missing (it stopped before its first evaluation?)")
    metrics = rd.read_metrics()
    stats = rd.load_stats()
    if config.get("monitor_every", 0) and not len(stats):
        raise InputError(f"{path}/stats.npz holds no snapshots")
    return RunData(path=path, config=config, metrics=metrics, stats=stats, title=title,
                   pretrain=rd.read_pretrain())
