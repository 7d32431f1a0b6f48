"""A reproduction's results as they are published: its tables, figures and page, and the
records of its runs that a reader needs to recompute every number in them (without the
checkpoints, which only resuming needs).

``fastff reproduce ... --no-train --out COPY`` on a copy of a published folder writes the same
tables, pairwise p-values and claims, byte for byte (``tests/test_reproduce.py`` checks every
folder under ``docs/results/`` that holds records).
"""
import shutil
from pathlib import Path

from ..errors import InputError

# What a reader needs of each run: its configuration, metrics (the errors the table reads), the
# monitor's snapshots (the figures and the per-layer claims), the paired test outcomes (the
# tests), the pre-training log, and the sweep's verdict on it (finished or diverged).
RUN_FILES = ("config.json", "metrics.csv", "stats.npz", "test_outcomes.npz", "pretrain.csv",
             "sweep_status.json")
# The folder's own files: what the tables, the claims and the page are made of and from.
FOLDER_FILES = ("reproduction.json", "svm.json", "table1.csv", "table1.md", "pairwise.csv",
                "claims.csv", "claims.md", "experiments.csv", "experiments.md", "index.html")
# What a published folder may weigh, records, tables and figures together
MAX_BYTES = 32 * 2**20
# The files a regeneration must give again byte for byte (figures are pictures: matplotlib
# versions draw them differently)
REGENERATED = ("table1.csv", "table1.md", "pairwise.csv", "claims.csv", "claims.md",
               "experiments.csv", "experiments.md")


def publish(out_dir, dest):
    """Copy a reproduction's results and its runs' records (no checkpoints) to ``dest``.

    Parameters
    ----------
    out_dir : str or Path
        A reproduction's folder (``fastff reproduce --out``).
    dest : str or Path
        An empty or new folder.

    Returns
    -------
    int
        The bytes written.

    Raises
    ------
    InputError
        When ``out_dir`` holds no reproduction, ``dest`` is not empty, or the records weigh
        more than :data:`MAX_BYTES`.
    """
    out, dest = Path(out_dir), Path(dest)
    if not (out / "reproduction.json").is_file() or not (out / "runs" / "runs.csv").is_file():
        raise InputError(f"{out} holds no reproduction with runs to publish")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest} exists and is not an empty folder")
    files = [out / n for n in FOLDER_FILES if (out / n).is_file()]
    files += sorted(out.glob("*.png")) + [out / "runs" / "runs.csv"]
    for run in sorted(p for p in (out / "runs").iterdir() if p.is_dir()):
        files += [run / n for n in RUN_FILES if (run / n).is_file()]
    size = sum(f.stat().st_size for f in files)
    if size > MAX_BYTES:
        raise InputError(f"{out}'s results and records weigh {size / 2**20:.1f} MiB, over the "
                         f"{MAX_BYTES / 2**20:.0f} MiB a published folder may")
    for f in files:
        target = dest / f.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    return size


def publish_folder(out, dest, progress=True):
    """:func:`publish`, saying what it weighed."""
    size = publish(out, dest)
    if progress:
        print(f"published to {dest}: {size / 2**20:.1f} MiB", flush=True)
    return size
