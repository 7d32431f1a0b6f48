"""``fastff report``: the paper's figures and an index.html from one or more run directories.

>>> fastff.report.report(["runs/tanh-standard", "runs/tanh-normalized"], "report")  # doctest: +SKIP
"""
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_bytes
from .figures import FIGURES
from .plotting import pyplot, save_png
from .html import index_html
from .runs import RunData, load_run

__all__ = ["report", "load_run", "RunData", "FIGURES"]


def report(run_dirs, out_dir=None, dpi=110):
    """Write the figures of :data:`FIGURES` and ``index.html`` for the given runs.

    Parameters
    ----------
    run_dirs : list of str or Path
        Run directories written by :func:`fastff.train` (``config.json``, ``metrics.csv``,
        ``stats.npz``). Per-run figures show one panel per run, in this order.
    out_dir : str or Path, optional
        Where to write; default ``RUN_DIR/figures`` for one run, ``./fastff-report`` for more.
    dpi : int

    Returns
    -------
    pathlib.Path
        The ``index.html`` written.
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise InputError("report needs at least one run directory")
    pyplot()  # matplotlib missing: a clear error before any run is read
    runs = [load_run(p) for p in run_dirs]
    out = Path(out_dir) if out_dir is not None else (
        runs[0].path / "figures" if len(runs) == 1 else Path("fastff-report"))
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for name, draw in FIGURES:
        fig = draw(runs)
        if fig is None:
            skipped.append((name, "no run has the data it needs (monitoring off, or too short)"))
            continue
        save_png(fig, out / name, dpi)
        written.append((name, draw.__doc__.strip().split("\n\n")[0].replace("\n", " ")))
    index = out / "index.html"
    atomic_write_bytes(index, index_html(runs, written, skipped).encode())
    return index
