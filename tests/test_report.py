"""``fastff report``: every figure and index.html from real runs; clear errors otherwise."""
import shutil

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
        fastff.train("40x3", activation="tanh", init=init, lr=0.05, updates=60, eval_every=20,
                     monitor_every=10, jacobian_every=30, out_dir=base / init, progress=False,
                     data_options=dict(valid_size=50, test_size=300))
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
