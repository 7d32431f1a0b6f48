"""``fastff report``: every figure and index.html from real runs; clear errors otherwise."""
import shutil

import numpy as np

import pytest

import fastff
from fastff import cli
from fastff.errors import InputError

pytest.importorskip("matplotlib")
from fastff.report import FIGURES, report  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    for init in ("standard", "normalized"):
        # the normalized one pre-trained too, so that every figure has a run to draw
        pretrain = dict(pretrain="dae", pretrain_updates=20) if init == "normalized" else {}
        fastff.train("40x3", activation="tanh", init=init, lr=0.05, updates=60, eval_every=20,
                     monitor_every=10, jacobian_every=30, out_dir=base / init, progress=False,
                     data_options=dict(valid_size=50, test_size=300), **pretrain)
    return [base / "standard", base / "normalized"]


def test_report_draws_every_figure(two_runs, tmp_path):
    index = report(two_runs, tmp_path / "rep")
    for name, _ in FIGURES:
        assert (tmp_path / "rep" / name).read_bytes()[:8] == PNG, name
    page = index.read_text()
    assert all(f'src="{name}"' in page for name, _ in FIGURES)
    assert "standard" in page and "normalized" in page and "Not drawn" not in page


def test_report_of_one_run_goes_into_its_directory(two_runs):
    index = report(two_runs[0])
    assert index == two_runs[0] / "figures" / "index.html" and index.is_file()


def test_report_without_monitor_skips_its_figures(tmp_path):
    fastff.train("8", updates=10, eval_every=5, monitor_every=0, out_dir=tmp_path / "r",
                 progress=False, data_options=dict(valid_size=20, test_size=20))
    index = report([tmp_path / "r"], tmp_path / "rep")
    page = index.read_text()
    assert "fig11_test_error.png" in page and "Not drawn" in page
    assert not (tmp_path / "rep" / "fig07_backprop_grad_hist_init.png").exists()


def test_report_says_what_is_missing(two_runs, tmp_path):
    with pytest.raises(InputError, match="not a fastff run: config.json is missing"):
        report([tmp_path], tmp_path / "rep")
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(two_runs[0] / "config.json", half)
    with pytest.raises(InputError, match="half-written.*metrics.csv, stats.npz"):
        report([half])
    (half / "stats.npz").write_bytes(b"not a zip")
    shutil.copy(two_runs[0] / "metrics.csv", half)
    with pytest.raises(InputError, match="stats.npz cannot be read"):
        report([half])


def test_cli_report(two_runs, tmp_path, capsys):
    assert cli.main(["report", *map(str, two_runs), "--out", str(tmp_path / "rep")]) == 0
    assert "index.html" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def _panel_axes(fig):
    """The data panels of a figure (not colour bars or the secondary 'examples' axes)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_title()]


def test_compared_panels_share_their_scales(two_runs):
    from fastff.report import figures
    from fastff.report.runs import load_run
    runs = [load_run(p) for p in two_runs]
    for draw in (figures.activation_hist_init, figures.delta_hist_init, figures.grad_w_hist_init,
                 figures.grad_w_std_training, figures.activation_mean_std):
        axes = _panel_axes(draw(runs))
        assert len(axes) == 2, draw.__name__
        assert axes[0].get_xlim() == axes[1].get_xlim(), draw.__name__
        assert axes[0].get_ylim() == axes[1].get_ylim(), draw.__name__
    fig = figures.saturation_heatmap(runs)
    meshes = [c for ax in _panel_axes(fig) for c in ax.collections]
    assert len(meshes) == 2 and meshes[0].norm.vmax == meshes[1].norm.vmax


def test_values_outside_a_histogram_are_said_not_piled_up(tmp_path):
    from fastff.report import figures
    from fastff.report.runs import load_run
    run = fastff.train("40x2", activation="relu", init="normal", lr=1e-4, updates=4,
                       eval_every=2, monitor_every=2, out_dir=tmp_path / "relu", progress=False,
                       data_options=dict(valid_size=50, test_size=300))
    m = run.stats[0]
    assert (m.outside["act"] > 0).all()  # N(0, 1) weights: relu outputs far above 4
    # the end bin holds only values inside the range, not every clipped one
    assert m.hists["act"][0, -1] < m.outside["act"][0] * 300 * 40
    fig = figures.activation_hist_init([load_run(tmp_path / "relu")])
    labels = [t.get_text() for t in _panel_axes(fig)[0].get_legend().get_texts()]
    assert all("% outside)" in label for label in labels), labels


def _read_events(path):
    """Every Event of a TensorBoard event file (TFRecord framing, read by hand)."""
    import struct
    from tensorboardX.proto import event_pb2
    data, events, i = path.read_bytes(), [], 0
    while i < len(data):
        (length,) = struct.unpack("<Q", data[i:i + 8])
        ev = event_pb2.Event()
        ev.ParseFromString(data[i + 12:i + 12 + length])
        events.append(ev)
        i += 12 + length + 4
    return events


def test_tensorboard_export_reads_back(two_runs, tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    assert cli.main(["export", "tensorboard", *map(str, two_runs), "--out", str(tmp_path / "tb")]) == 0
    assert "tensorboard --logdir" in capsys.readouterr().out
    files = list((tmp_path / "tb" / "standard").glob("events.out.tfevents.*"))
    assert len(files) == 1 and (tmp_path / "tb" / "normalized").is_dir()
    scalars, histos = {}, {}
    for ev in _read_events(files[0]):
        for v in ev.summary.value:
            if v.HasField("histo"):
                histos.setdefault(v.tag, {})[ev.step] = v.histo
            else:
                scalars.setdefault(v.tag, {})[ev.step] = v.simple_value
    run = fastff.report.load_run(two_runs[0])
    u, err = run.series("eval", "test_error")
    assert scalars["eval/test_error"] == pytest.approx(dict(zip(u.tolist(), err.tolist())))
    u, sat = run.series("train", "sat_high", 2)
    assert scalars["train/L2/sat_high"] == pytest.approx(dict(zip(u[1:].tolist(), sat[1:].tolist())))
    assert set(histos) == {f"{n}/L{k}" for n in ("act", "delta", "grad_w") for k in (1, 2, 3)}
    for t, m in enumerate(run.stats):
        h = histos["delta/L3"][int(m.update)]
        assert list(h.bucket) == m.hists["delta"][2].tolist()
        assert list(h.bucket_limit) == pytest.approx(m.edges["delta"][1:].tolist())
    # a second export replaces the first (one event file, not two)
    fastff.export.tensorboard(two_runs, tmp_path / "tb")
    assert len(list((tmp_path / "tb" / "standard").glob("events.out.tfevents.*"))) == 1


def test_tensorboard_export_errors(tmp_path):
    with pytest.raises(InputError, match="config.json is missing"):
        fastff.export.tensorboard([tmp_path])


def test_cost_surface_is_the_kernels_costs_and_measures_plateaus(tmp_path, capsys):
    from fastff.kernels import reference as ref
    from fastff.report.cost_surface import cost_surface, plateau_fraction
    s = cost_surface(points=9, seed=3)
    assert s.cost["nll"].shape == s.cost["quadratic"].shape == (9, 9)
    # one grid point recomputed directly: the same data, weights and kernels
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((200, 1)), rng.integers(0, 2, 200)
    W1 = fastff.init_weights("normalized", 1, 1, rng, np.float64)
    W2 = fastff.init_weights("normalized", 1, 2, rng, np.float64)
    W1[0, 0], W2[0, 0] = s.w1[2], s.w2[7]
    z = np.tanh(x @ W1) @ W2
    assert s.cost["nll"][2, 7] == pytest.approx(ref.softmax_nll(z, y)[0], rel=1e-12)
    assert s.cost["quadratic"][2, 7] == pytest.approx(ref.softmax_quadratic(z, y)[0], rel=1e-12)
    # the paper's claim (§4.1, Fig. 5), measured: the quadratic cost has plateaus where
    # the log-likelihood has none
    full = cost_surface(points=41)
    assert full.plateau["nll"] == 0.0 and full.plateau["quadratic"] > 0.05
    # the measure itself: a flat high shelf is plateau, a flat minimum is not
    w = np.linspace(-1, 1, 21)
    on_shelf = np.add.outer(w, w) > 1.2  # a corner: 8% of the grid
    shelf = np.where(on_shelf, 3.2, np.add.outer(w, w) + 2)
    assert 0.5 * on_shelf.mean() < plateau_fraction(shelf, w, w) <= on_shelf.mean()
    assert plateau_fraction(np.add.outer(w ** 2, w ** 2), w, w) == 0.0
    for kwargs, match in ((dict(points=2), "at least 3"), (dict(span=0), "span"),
                          (dict(n_classes=1), "n_classes"), (dict(plateau_threshold=2), "threshold")):
        with pytest.raises(InputError, match=match):
            cost_surface(**kwargs)
    assert cli.main(["figure", "cost-surface", "--points", "21", "--out", str(tmp_path / "f5.png")]) == 0
    assert (tmp_path / "f5.png").stat().st_size > 20_000
    assert "quadratic" in capsys.readouterr().out
