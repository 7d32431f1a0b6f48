"""fastff in Jupyter: the HTML summaries of runs, models and statistics objects, and the example
notebook in docs/ executed by a real Jupyter kernel."""
import builtins
import html
import re
from pathlib import Path

import numpy as np
import pytest

import fastff
from fastff import kernels, notebook
from fastff.monitor import Stats

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebook.ipynb"


@pytest.fixture(scope="module")
def run():
    return fastff.train("1024-20x3-9", activation="tanh", updates=40, eval_every=20,
                        monitor_every=20, seed=0, progress=False)


def _cells(page):
    """The text of every table cell of an HTML fragment."""
    return [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", page)]


def test_a_run_shows_its_final_errors_and_each_layer_at_the_last_log(run):
    page = run._repr_html_()
    last = run.final
    cells = _cells(page)
    assert f"{100 * last['test_error']:.2f}%" in cells
    assert f"{100 * last['valid_error']:.2f}%" in cells and f"{last['train_loss']:.4g}" in cells
    assert "1024-20-20-20-9 tanh, normalized init, shapeset" in page
    for k in (1, 2, 3):  # every hidden layer: saturation and spread of the last log
        assert f"{100 * last[f'L{k}_sat_high']:.2f}%" in cells
        assert f"{last[f'L{k}_std']:.4g}" in cells
    assert "dead" not in page  # tanh units never die: the column is relu's
    assert f"monitor set at update {run.stats[-1].update}" in page  # the monitor's last snapshot
    assert page.count('<img alt="fastff figure" src="data:image/png;base64,') == 1


def test_without_matplotlib_the_summary_keeps_its_tables(run, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    page = run._repr_html_()
    assert "<img" not in page and page.count("<table") == 3


def test_a_model_shows_the_papers_variance_conditions():
    net = fastff.MLP("40-50x2-3", init="standard", seed=1)
    cells = _cells(net._repr_html_())
    W = net.params[0][0].astype(np.float64)
    assert f"{40 * W.var():.4g}" in cells and f"{50 * W.var():.4g}" in cells
    # the standard initialization: n_in Var[W] = 1/3 (eq. 15), up to sampling
    assert abs(40 * W.var() - 1 / 3) < 0.05
    assert "softmax" in cells and "40 -> 50" in cells


def test_statistics_objects_show_their_summaries():
    net = fastff.MLP("12-7x2-3", activation="relu", seed=2)
    stats = net.new_stats(weight_grad=True)
    x = np.random.default_rng(3).standard_normal((9, 12)).astype(np.float32)
    net.step(x, np.arange(9) % 3, 0.1, stats=stats)
    summary = stats.summary()
    cells = _cells(stats._repr_html_())
    for s in summary:
        assert f"{100 * s['dead']:.2f}%" in cells and f"{s['grad_w_std']:.4g}" in cells
    assert "dead" in stats._repr_html_()  # relu: units can die
    fwd = _cells(stats.forward[0]._repr_html_())
    assert f"{summary[0]['std']:.4g}" in fwd and "9 rows" in stats.forward[0]._repr_html_()
    bwd = stats.backward[0]._repr_html_()
    assert f"{summary[0]['delta_std']:.4g}" in _cells(bwd) and "1 steps" in bwd
    fresh = kernels.ForwardStats(5, "tanh")._repr_html_()
    assert _cells(fresh) == ["-"] * 4  # nothing seen yet: no made-up zeros


def test_the_monitor_snapshots_show_the_last_one_and_a_figure(run):
    page = run.stats._repr_html_()
    m = run.stats[-1]
    assert f"{len(run.stats)} snapshots" in page and "<img" in page
    assert f"{m.layer(2)['act_p98']:.4g}" in _cells(page)
    assert "mean Jacobian singular value" in page
    assert "no snapshot yet" in Stats()._repr_html_()
    assert f"{m.layer(1)['act_std']:.4g}" in _cells(m._repr_html_())


def test_an_untrained_run_and_odd_names_are_shown_safely():
    from fastff.training import Run
    page = Run(model=fastff.MLP("4-3-2"), config={"dataset": "<b>x</b>"})._repr_html_()
    assert "no evaluation yet" in page and "<b>x</b>" not in page and "&lt;b&gt;" in page
    assert notebook.number(float("nan")) == "-" and notebook.number(None) == "-"


# -- the example notebook, run by a real Jupyter kernel -----------------------------------------
def test_the_example_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_the_example_notebook_runs_in_a_jupyter_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pages = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert sum("fastff run: 1024-300-300-300-300-300-9 tanh" in p for p in pages) == 2
    assert sum("n_in Var[W] (eq. 10)" in p for p in pages) == 1
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 1  # Fig. 6, once
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    ratio = {init: float(r) for init, r in re.findall(r"(\w+):.*top / bottom layer: ([\d.]+)",
                                                      text)}
    # Fig. 6: under the standard initialization the activations shrink going up the layers
    assert ratio["standard"] < 0.25 < 0.45 < ratio["normalized"], text
    assert (tmp_path / "runs" / "standard" / "metrics.csv").is_file()
