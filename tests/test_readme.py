"""Every code block of the README runs, top to bottom, as a reader would run it.

Python blocks run in one namespace; shell blocks run their ``fastff`` commands through the
command line's entry point. What a shell block installs (``pip install ...``) is what this test
environment already is, and ``pytest`` is this very run: those two are the only parts skipped.
"""
import re
import shlex
from pathlib import Path

import pytest

from fastff import cli

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks():
    return [(lang, body) for lang, body in BLOCK.findall(README.read_text())]


def shell_commands(body):
    """The commands of a shell block: one per line and per ``&&``, comments dropped."""
    for line in body.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            yield words[:cut]
            words = words[cut + 1:]


def test_readme_has_the_blocks_it_promises():
    langs = [lang for lang, _ in blocks()]
    assert langs.count("python") >= 1 and langs.count("bash") >= 2
    quick = blocks()[0][1].splitlines()
    assert len(quick) == 2, "the quick start is exactly two commands"
    assert quick[0].startswith("pip install . && fastff train") and "pytest" in quick[1]


def test_every_readme_block_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tensorboardX")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for lang, body in blocks():
        if lang == "python":
            exec(compile(body, str(README), "exec"), namespace)
            continue
        assert lang == "bash", lang
        for words in shell_commands(body):
            if words[:2] == ["pip", "install"] or words == ["pytest"]:
                continue
            assert words[0] == "fastff", f"the README runs only fastff commands: {words}"
            rc = cli.main(words[1:])
            assert rc == 0, f"`{' '.join(words)}` exited {rc}: {capsys.readouterr().err[-2000:]}"
    out = capsys.readouterr().out
    # the quick start's expected result, as the README states it
    assert "test error 74.88%" in out, out[-3000:]
    assert (tmp_path / "report" / "index.html").is_file()
    assert list((tmp_path / "tensorboard").glob("*/events.out.tfevents.*"))
    assert namespace["run"].final["update"] == 2000
