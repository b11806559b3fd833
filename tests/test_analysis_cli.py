"""plot_convergence.py end to end on hand-built experiment folders, and every bad input (exit 2, nothing written)."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.extract import curves
from analysis.load import load_experiment
from analysis.plot_convergence import main
from tests.analysis_frames import frames, grid, trial, write_experiment
from tests.test_analysis_claims import as_claimed

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "analysis" / "plot_convergence.py"


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory) -> Path:
    """Two lengths x two lrs x two cells x 3 seeds, one ASHA-cut and one diverged trial."""
    specs = grid(as_claimed, digits=(10, 20), lr=(0.001, 0.01), layers=(2,), cell=("RNN", "GRU"))
    specs += [trial(end_at=300, stop_reason="early_stopped", seed=3, digits=20),
              trial(diverge_at=400, seed=4, lr=0.01, digits=10)]
    return write_experiment(tmp_path_factory.mktemp("results") / "exp-small", specs,
                            {"grid": "handmade", "seeds": 3, "max_steps": 1000, "wall_time_s": 90.0})


def test_script_writes_figures_csvs_claims_and_report(small_sweep, tmp_path):
    out = tmp_path / "out"
    done = run_script(str(small_sweep), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"experiment: {small_sweep}" in done.stdout
    assert "skipped fig5_layers: the sweep did not vary layers" in done.stdout
    names = ["fig3_digits_train_loss", "fig4_lr_train_loss", "fig8_cell_train_loss", "heatmap_steps_to_solve"]
    for name in names:
        for suffix in ("png", "svg", "csv"):
            assert (out / f"{name}.{suffix}").stat().st_size > 0, f"{name}.{suffix}"
    assert not list(out.glob("fig5*")) and not list(out.glob(".*"))  # skipped, and no temp files left
    # the CSV is exactly the extracted frame the figure drew
    experiment = load_experiment(small_sweep)
    drawn, _ = curves(experiment.history, experiment.trials, "lr", "digits", "train_loss")
    saved = pd.read_csv(out / "fig4_lr_train_loss.csv")
    assert len(saved) == len(drawn) and saved["value"].tolist() == pytest.approx(drawn["value"].tolist())
    assert set(saved["kind"]) == {"mean", "seed", "early_stopped", "diverged"}
    report = (out / "report.md").read_text()
    for text in ("## Settings", "## Cost", "| trials | 26 |", "![Seed figure 4: learning rate: train_loss](fig4_lr_train_loss.png)",
                 "| C3 | **", "## Best configs", "skipped: fig5_layers"):
        assert text in report, text
    claims = pd.read_csv(out / "claims.csv")
    assert claims["claim"].tolist() == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert claims.set_index("claim").loc["C4", "verdict"] == "not testable"


def test_default_experiment_is_the_latest_under_results(small_sweep, tmp_path, capsys, monkeypatch):
    history, trials = frames([trial(solve_at=300, seed=s, digits=d) for d in (10, 20) for s in (0, 1, 2)])
    older = tmp_path / "results" / "older"
    older.mkdir(parents=True)
    history.to_parquet(older / "history.parquet")
    trials.to_parquet(older / "trials.parquet")
    os.utime(older / "trials.parquet", (1, 1))
    newer = write_experiment(tmp_path / "results" / "newer", [trial(solve_at=300, seed=s, digits=d) for d in (10, 20) for s in (0, 1)])
    monkeypatch.chdir(tmp_path)
    assert main(["--metric", "val_exact_match"]) == 0
    printed = capsys.readouterr().out
    assert f"experiment: {Path('results') / 'newer'}" in printed
    assert (newer / "analysis" / "fig3_digits_val_exact_match.png").exists()
    assert "skipped fig4_lr" in printed and "skipped heatmap_steps_to_solve" in printed
    assert not (older / "analysis").exists()


def _corrupt(folder: Path) -> Path:
    write_experiment(folder, [trial(solve_at=300)])
    (folder / "trials.parquet").write_bytes(b"PAR1 this is not a parquet file")
    return folder


def _corrupt_history(folder: Path) -> Path:
    write_experiment(folder, [trial(solve_at=300)])  # a good trials.parquet beside it
    (folder / "history.parquet").write_bytes(b"PAR1 this is not a parquet file")
    return folder


def _no_rows(folder: Path) -> Path:
    write_experiment(folder, [trial(solve_at=300)])
    history, trials = frames([trial(solve_at=300)])
    trials.iloc[:0].to_parquet(folder / "trials.parquet")
    return folder


BAD_INPUTS = [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "trials.parquet").write_text("x") and p / "trials.parquet", "is a file, not an experiment folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "missing trials.parquet"),
    (_corrupt, "corrupt or not parquet"),
    (_corrupt_history, "history.parquet' as parquet"),
    (_no_rows, "has no rows"),
]


@pytest.mark.parametrize("make, message", BAD_INPUTS, ids=["missing-dir", "a-file", "empty-dir", "corrupt-parquet", "corrupt-history", "no-rows"])
def test_bad_experiment_folder_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, make, message):
    folder = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main([str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert sorted(tmp_path.rglob("*")) == before


def test_bad_input_from_the_shell_is_one_line_without_traceback(tmp_path):
    folder = _corrupt(tmp_path / "exp")
    before = sorted(tmp_path.rglob("*"))
    done = run_script(str(folder), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: cannot read") and done.stderr.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before


def test_no_results_folder_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    assert "no results folder" in capsys.readouterr().err
    (tmp_path / "results").mkdir()
    assert main([]) == 2
    assert "no experiment under" in capsys.readouterr().err
    assert list(tmp_path.rglob("*")) == [tmp_path / "results"]


def test_frames_that_break_the_contract_exit_2(tmp_path, capsys):
    folder = write_experiment(tmp_path / "exp", [trial(solve_at=300)])
    history, trials = frames([trial(solve_at=300)])
    trials.assign(stop_reason="exploded").to_parquet(folder / "trials.parquet")
    assert main([str(folder)]) == 2
    assert "stop_reason has ['exploded']" in capsys.readouterr().err
    trials.to_parquet(folder / "trials.parquet")
    history.assign(step="ten").to_parquet(folder / "history.parquet")
    assert main([str(folder)]) == 2
    assert "history.parquet column 'step'" in capsys.readouterr().err
    history.drop(columns="val_loss").to_parquet(folder / "history.parquet")
    assert main([str(folder)]) == 2
    assert "lacks columns ['val_loss']" in capsys.readouterr().err
    assert not (folder / "analysis").exists()


def test_out_onto_a_file_or_an_unwritable_place_exits_2_before_any_work(small_sweep, tmp_path):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub", Path("/proc/tune_adder_analysis")):
        before = sorted(tmp_path.rglob("*")) + sorted(small_sweep.rglob("*"))
        done = run_script(str(small_sweep), "--out", str(out), cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == "", (out, done.stdout[-1000:], done.stderr[-2000:])
        assert done.stderr.count("\n") == 1 and "--out" in done.stderr, done.stderr
        assert sorted(tmp_path.rglob("*")) + sorted(small_sweep.rglob("*")) == before


def test_claims_script_help_is_help(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / "claims.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout and "[experiment ...]" in done.stdout, done.stdout + done.stderr
