"""The reproduction's report page (the smoke budget's ``index.html``) opened in headless
Chromium: every image loads, every table renders, the console shows no error. Skipped, saying
why, where no Chromium is installed (Debian: ``apt-get install chromium``)."""
import re

import pytest

from browser import Browser, find_chromium

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium): "
                             "the report page is not opened in a browser here")


@pytest.fixture(scope="module")
def browser():
    with Browser(CHROMIUM) as b:
        yield b


@pytest.fixture(scope="module")
def smoke_page(tmp_path_factory):
    pytest.importorskip("matplotlib")
    from fastff.reproduction import reproduce
    out = tmp_path_factory.mktemp("browser") / "smoke"
    reproduce("glorot2010", budget="smoke", out_dir=out, datasets="shapeset", progress=False)
    return out / "index.html"


def _assert_renders(found, page_html):
    assert found["errors"] == [], found["errors"]
    images = found["images"]
    assert len(images) == len(re.findall(r"<img\b", page_html))
    assert all(i["complete"] and i["width"] > 0 for i in images), \
        [i["src"] for i in images if not i["width"]]
    assert len(found["tables"]) == len(re.findall(r"<table\b", page_html))
    for t in found["tables"]:
        assert t["rows"] >= 2 and t["cells"] >= 1 and t["height"] > 0, t


def test_the_smoke_report_page_renders_in_chromium(browser, smoke_page):
    html = smoke_page.read_text()
    found = browser.open(smoke_page)
    _assert_renders(found, html)
    assert len(found["images"]) >= 10 and len(found["tables"]) >= 2
    assert found["title"]


def test_a_notebook_summary_renders_in_chromium(browser, tmp_path):
    pytest.importorskip("matplotlib")
    import fastff
    run = fastff.train("1024-16x2-9", updates=60, eval_every=30, monitor_every=30, seed=0,
                       progress=False)
    body = run._repr_html_() + run.model._repr_html_() + run.stats._repr_html_()
    page = tmp_path / "summary.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>run</title>"
                    f"</head><body>{body}</body></html>")
    _assert_renders(browser.open(page), body)


def test_the_check_sees_a_broken_image_and_a_script_error(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><html><head><title>broken</title></head><body>"
                    "<img src='missing.png'><table><tr><td>1</td></tr></table>"
                    "<script>console.error('boom'); undefinedName();</script></body></html>")
    found = browser.open(page)
    text = " ".join(found["errors"])
    assert "missing.png" in text and "boom" in text and "exception" in text
    assert found["images"][0]["width"] == 0
