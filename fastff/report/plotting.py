"""What every figure module of fastff.report shares: matplotlib on the Agg backend, writing a
PNG, a figure's title."""
import io
import os

from ..errors import FastffError
from ..files import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend (in a Jupyter kernel: its inline backend, so that
    figures show in the notebook), or a clear error when matplotlib is missing."""
    try:
        import matplotlib
        if "inline" not in os.environ.get("MPLBACKEND", ""):
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FastffError("figures need matplotlib: pip install 'fastff[plot]'") from None
    return plt


def save_png(fig, path, dpi=110):
    """Write ``fig`` to ``path`` as a PNG, whole or not at all, and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def finish(fig, title):
    """The figure with its title (wrapped to the figure's width), laid out."""
    import textwrap
    # about 13 characters an inch at 10 points: a long title wraps instead of running off
    fig.suptitle(textwrap.fill(title, max(40, int(13 * fig.get_figwidth()))), fontsize=10)
    fig.tight_layout()
    return fig
