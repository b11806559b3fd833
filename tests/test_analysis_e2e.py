"""End to end: a real quick sweep (real Ray, real training) read back by plot_convergence.py."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tune_adder.metrics import HISTORY_COLUMNS, TRIAL_COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def _run_quick_sweep(storage: Path, address: str | None) -> Path:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tune_adder.sweep", "--grid", "quick", "--storage", str(storage), "--name", "quick-e2e",
               "--max-steps", "20", "--eval-every", "10", "--eval-size", "50", "--seeds", "1", "--quiet"]
    command += ["--address", address] if address else []
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return storage / "quick-e2e"


@pytest.fixture(scope="module")
def quick_experiment(request, tmp_path_factory) -> Path:
    """A real quick sweep; it joins the session's Ray cluster when tests/conftest.py provides one."""
    try:
        address = request.getfixturevalue("ray_address")
    except pytest.FixtureLookupError:
        address = None  # the sweep starts (and stops) its own local Ray
    return _run_quick_sweep(tmp_path_factory.mktemp("storage"), address)


def test_quick_sweep_frames_match_the_contract_and_are_analysed(quick_experiment, tmp_path):
    history = pd.read_parquet(quick_experiment / "history.parquet")
    trials = pd.read_parquet(quick_experiment / "trials.parquet")
    assert list(history.columns) == list(HISTORY_COLUMNS) and list(trials.columns) == list(TRIAL_COLUMNS)
    out = tmp_path / "analysis"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / "plot_convergence.py"), str(quick_experiment), "--out", str(out),
                           "--metric", "val_loss"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"experiment: {quick_experiment}" in done.stdout
    assert "skipped fig5_layers: the sweep did not vary layers" in done.stdout  # the quick grid keeps 2 layers
    drawn = pd.read_csv(out / "fig8_cell_val_loss.csv")
    assert set(drawn["series"]) == set(trials["cell"].str.upper()) and drawn["value"].gt(0).all()
    assert (out / "fig8_cell_val_loss.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert f"| trials | {len(trials)} |" in report and "| grid | `quick` |" in report
    claims = pd.read_csv(out / "claims.csv").set_index("claim")
    assert claims.loc["C4", "verdict"] == "not testable"  # one depth in the quick grid
