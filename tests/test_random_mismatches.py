"""Random mismatches at the public kernel and model API, each in a child process.

The child (``mismatch_runner.py``) reports every case before and after its call, so a crash
(segmentation fault, abort) or a hang is pinned to the case that caused it; the parent then
starts a fresh child after that case. The test fails on anything but a fastff error for a broken
contract or the reference's numbers for a kept one.
"""
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

RUNNER = Path(__file__).with_name("mismatch_runner.py")
CASES = int(os.environ.get("FASTFF_MISMATCH_CASES", "400"))
SEED = int(os.environ.get("FASTFF_MISMATCH_SEED", "20101"))
CASE_TIMEOUT = 120.0  # a first call may compile kernels; a hang is far longer


def _run(first, last, problems, outcomes):
    """Run cases first..last-1 in one child; return the case after the last one it finished."""
    proc = subprocess.Popen([sys.executable, str(RUNNER), str(SEED), str(first), str(last)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(RUNNER.parent))
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    current, deadline = None, time.monotonic() + CASE_TIMEOUT
    while True:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            proc.kill()
            proc.wait()
            problems.append(f"case {current}: hung for more than {CASE_TIMEOUT:.0f} s")
            return (current if current is not None else first) + 1
        line = proc.stdout.readline()
        if not line:
            break
        kind, i, rest = (line.rstrip("\n").split(" ", 2) + [""])[:3]
        if kind == "BEGIN":
            current, deadline = int(i), time.monotonic() + CASE_TIMEOUT
        elif kind == "OK":
            outcomes[rest.split()[-1]] = outcomes.get(rest.split()[-1], 0) + 1
            current = None
        elif kind == "BAD":
            problems.append(f"case {i}: {rest}".replace("\\n", "\n"))
            current = None
    proc.wait()
    if current is not None:  # began and never reported: the process died in the call
        err = proc.stderr.read()[-1500:]
        problems.append(f"case {current}: the process died (exit {proc.returncode}):\n{err}")
        return current + 1
    if proc.returncode != 0:
        problems.append(f"runner exited {proc.returncode}:\n{proc.stderr.read()[-1500:]}")
    return last


def test_random_mismatches_give_fastff_errors_or_the_reference_result():
    problems, outcomes, i = [], {}, 0
    while i < CASES:
        i = _run(i, CASES, problems, outcomes)
    detail = "\n\n".join(problems[:10])
    assert not problems, (f"{len(problems)} of {CASES} cases failed (rerun one with "
                          f"python tests/mismatch_runner.py {SEED} N N+1):\n{detail}")
    # the generator must exercise both kinds of case
    assert outcomes.get("error", 0) > CASES // 4 and outcomes.get("match", 0) > CASES // 10, outcomes
