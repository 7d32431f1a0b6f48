"""benchmarks/compare_step.py, the each-contender-in-its-own-process benchmark, runs end to end."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_step.py"


def test_compare_step_prints_the_processor_and_a_ratio_per_batch():
    out = subprocess.run([sys.executable, str(SCRIPT), "--batches", "10", "--rounds", "1",
                          "--contenders", "fastff", "numpy-reference"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert "cores" in lines[0]  # the processor, from lscpu
    assert lines[1].startswith("batch 10: fastff ") and "numpy-reference" in lines[1]
    assert lines[2].strip().startswith("fastff is faster by: ") and lines[2].endswith("x numpy-reference")
