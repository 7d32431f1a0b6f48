"""Every code block of the README and of docs/ runs, top to bottom, as a reader would run it.

Each page runs in a fresh folder: its Python blocks in one namespace, its shell blocks' ``fastff``
commands through the command line's entry point. What a shell block installs (``pip install
...``) is what this test environment already is, and ``pytest`` is this very run: those two are
the only parts skipped.
"""
import re
import shlex
from pathlib import Path

import pytest

from fastff import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README] + sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(page):
    return [(lang, body) for lang, body in BLOCK.findall(page.read_text())]


def shell_commands(body):
    """The commands of a shell block: one per line and per ``&&``, comments dropped."""
    for line in body.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            yield words[:cut]
            words = words[cut + 1:]


def run_page(page, capsys):
    """Run every block of ``page`` in the current folder; returns (namespace, printed text)."""
    namespace = {}
    for lang, body in blocks(page):
        if lang == "python":
            exec(compile(body, str(page), "exec"), namespace)
            continue
        assert lang == "bash", f"{page.name}: a {lang} block"
        for words in shell_commands(body):
            if words[:2] == ["pip", "install"] or words == ["pytest"]:
                continue
            assert words[0] == "fastff", f"{page.name} runs only fastff commands: {words}"
            rc = cli.main(words[1:])
            assert rc == 0, f"`{' '.join(words)}` exited {rc}: {capsys.readouterr().err[-2000:]}"
    return namespace, capsys.readouterr().out


def test_the_readme_is_short_and_leads_to_every_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 100
    quick = blocks(README)[0][1].splitlines()
    assert len(quick) == 2, "the quick start is exactly two commands"
    assert quick[0].startswith("pip install . && fastff train") and "pytest" in quick[1]
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in text, f"README does not link docs/{page.name}"
    for link in re.findall(r"\]\((docs/[\w.-]+\.md)", text):
        assert (ROOT / link).is_file(), link


def test_links_between_pages_resolve():
    for page in PAGES[1:]:
        for link in re.findall(r"\]\(([\w.-]+\.md)", page.read_text()):
            assert (page.parent / link).is_file(), f"{page.name} links {link}"


# what each page's blocks must have done, beyond running
CHECKS = {
    "README.md": lambda ns, out, tmp: (
        "test error 73.38%" in out  # the quick start's expected result, as the README says
        and "standard activation std by layer at init" in out),
    "training.md": lambda ns, out, tmp: (
        ns["run"].final["update"] == 2000 and (tmp / "report" / "index.html").is_file()
        and bool(list((tmp / "tensorboard").glob("*/events.out.tfevents.*")))),
    "kernels.md": lambda ns, out, tmp: ns["gx"].shape == (10, 1024) and ns["Wt"].shape == (1024, 1000),
    "pytorch-and-notebooks.md": lambda ns, out, tmp: ns["gap"] < 1e-14 and "loss 2.190505 vs 2.190505" in out and "layer 1 of the module (Dropout)" in out,
    "sweeps-and-reproduction.md": lambda ns, out, tmp: (
        (tmp / "sweeps" / "init-lr" / "runs.csv").is_file()
        and (tmp / "repro-smoke" / "table1.md").is_file()),
}


# pages whose blocks need an optional package beyond the [test] extra
NEEDS = {"kernels.md": "torch", "pytorch-and-notebooks.md": "torch"}


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_block_of_the_page_runs(page, tmp_path, monkeypatch, capsys):
    if not blocks(page):
        assert page.name not in CHECKS
        return
    pytest.importorskip("matplotlib")
    pytest.importorskip("tensorboardX")
    if page.name in NEEDS:
        pytest.importorskip(NEEDS[page.name])
    monkeypatch.chdir(tmp_path)
    namespace, out = run_page(page, capsys)
    check = CHECKS.get(page.name)
    assert check is None or check(namespace, out, tmp_path), out[-3000:]
