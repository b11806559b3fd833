"""benchmarks/bench_probes.py: bad input is one line and exit 2 with nothing written; a small real run times both
ladders on the same weights, agrees with the full ladder wherever the stopped one probes, and writes its rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_probes.py"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip


@pytest.mark.parametrize(("args", "named"), [(["--steps", "0"], "--steps 0"), (["--grid", "nope"], "--grid 'nope'"),
                                             (["--digits", "7"], "--digits 7"), (["--json", "."], "--json .")])  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, named):
    done = _run(args, tmp_path)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert named in line, line
    assert list(tmp_path.iterdir()) == []


def test_one_config_times_both_ladders_on_the_same_weights():
    """measure() on one quick config after 5 steps: it cannot add 100 digits, so each kind stops at its first rung
    (2 of 6 rungs probed) and the table adds it up. (measure itself asserts the stopped ladder's values equal the
    full ladder's wherever it probes.)"""
    import importlib.util

    from tune_adder import spaces

    spec = importlib.util.spec_from_file_location("bench_probes", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.measure(spaces.grid_configs("quick", 5)[0], steps=5)
    assert row["rungs_probed"] == 2 and row["rungs_passed"] == 0 and row["full_s"] > 0 and row["stopped_s"] > 0, row
    assert "| all | 1 | 2 |" in bench.table([row])
