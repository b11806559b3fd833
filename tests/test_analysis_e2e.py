"""End to end: the session's real quick sweep (real Ray, real training; tests/conftest.py) read back by plot_convergence.py."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from analysis.extract import CELL_PAIRS
from tune_adder.metrics import HISTORY_COLUMNS, TRIAL_COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def test_quick_sweep_frames_match_the_contract_and_are_analysed(quick_sweep, tmp_path):
    assert quick_sweep["out"].returncode == 0, quick_sweep["out"].stderr[-3000:]
    experiment = quick_sweep["experiment"]
    history = pd.read_parquet(experiment / "history.parquet")
    trials = pd.read_parquet(experiment / "trials.parquet")
    assert list(history.columns) == list(HISTORY_COLUMNS) and list(trials.columns) == list(TRIAL_COLUMNS)
    out = tmp_path / "analysis"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / "plot_convergence.py"), str(experiment), "--out", str(out),
                           "--metric", "val_loss"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"experiment: {experiment}" in done.stdout
    assert "skipped fig5_layers: the sweep did not vary layers" in done.stdout  # the quick grid keeps 2 layers
    drawn = pd.read_csv(out / "fig8_cell_val_loss.csv")  # differences between the cells the quick grid ran
    cells = set(trials["cell"].str.upper())
    assert set(drawn["pair"]) == {f"{a} - {b}" for a, b in CELL_PAIRS if {a, b} <= cells} and drawn["value"].notna().all()
    assert (out / "fig8_cell_val_loss.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert f"| trials | {len(trials)} |" in report and "| grid | `quick` |" in report
    claims = pd.read_csv(out / "claims.csv").set_index("claim")
    assert claims.loc["C4", "verdict"] == "not testable"  # one depth in the quick grid
