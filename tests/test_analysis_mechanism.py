"""Issue 19 in the study's analysis: each adder's margin summary lands on its own trial row (adders.csv), bad
--margins input exits 2 before anything is written, and plot_convergence.py --margins on the committed data."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import mechanism
from analysis import mechanism_predict as predict
from analysis.plot_convergence import main
from tests.analysis_frames import trial, write_experiment

ROOT = Path(__file__).resolve().parents[1]
MARGINS = ROOT / "data" / "margins" / "margins.parquet"
STUDY = ROOT / "data" / "full-seeds3"


@pytest.fixture(scope="module")
def measured() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The committed full-seeds3 trials and the committed margins of its adders."""
    margins = pd.read_parquet(MARGINS)
    return pd.read_parquet(STUDY / "trials.parquet"), margins[margins["experiment"] == STUDY.name].reset_index(drop=True)


def test_each_margin_summary_lands_on_its_own_adder_whatever_the_row_order(measured):
    trials, margins = measured
    table = mechanism.adder_table(trials, margins, predict.predictions(margins))
    assert len(table) == len(trials) and table["margins_measured"].sum() == len(margins) > 0
    by_trial = table.set_index("trial_id")
    for _, row in margins.iterrows():  # straight from the parquet, by trial id
        got = by_trial.loc[row["trial_id"]]
        assert got["chain_plateau_margin"] == row["chain_plateau_margin"]
        assert got["recorded_rung"] == predict.measured_rung(row)
        assert got["digits"] == row["digits"] and got["seed"] == row["seed"] and got["lr"] == row["lr"]
    assert by_trial.loc[~by_trial["margins_measured"], "chain_plateau_margin"].isna().all()
    # the same adders in another order (margins shuffled, trials reversed): the same table, row for row
    shuffled = margins.sample(frac=1.0, random_state=1)
    again = mechanism.adder_table(trials[::-1], shuffled, predict.predictions(shuffled))
    pd.testing.assert_frame_equal(again.set_index("trial_id").sort_index(), by_trial.sort_index())


def test_the_carry_summary_names_the_first_layer_that_loses_the_carry():
    margins = pd.DataFrame({"carry_l1_h_chain_acc_beyond": [1.0, 0.95, 0.4], "carry_l2_h_chain_acc_beyond": [1.0, 0.5, np.nan]})
    found = mechanism.carry_summary(margins)
    assert found["carry_worst_layer_acc_beyond"].tolist() == [1.0, 0.5, 0.4]
    assert found["carry_first_layer_lost"].tolist()[1:] == [2, 1] and np.isnan(found["carry_first_layer_lost"][0])


def _not_parquet(p: Path) -> Path:
    (p / "m.parquet").write_text("not a parquet file")
    return p / "m.parquet"


def _no_profiles(p: Path) -> Path:
    pd.DataFrame({"trial_id": ["a"], "digits": [10]}).to_parquet(p / "m.parquet")
    return p / "m.parquet"


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.parquet", "no such file"), (_not_parquet, "not a parquet file"), (_no_profiles, "column cell missing"),
], ids=["missing", "not-parquet", "wrong-columns"])
def test_bad_margins_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, make, message):
    folder = write_experiment(tmp_path / "exp", [trial(seed=s) for s in range(2)])
    margins = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main([str(folder), "--out", str(tmp_path / "out"), "--margins", str(margins)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and f"--margins {margins}" in err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.slow
def test_plot_script_with_margins_writes_adders_csv_the_figure_and_the_section(measured, tmp_path):
    trials, margins = measured
    out = tmp_path / "out"
    assert main([str(STUDY), "--out", str(out), "--margins", str(MARGINS)]) == 0
    adders = pd.read_csv(out / "adders.csv")
    assert len(adders) == len(trials) and adders["margins_measured"].sum() == len(margins)
    assert set(mechanism.SUMMARY_COLUMNS) <= set(adders.columns)
    assert {"predicted_rung_forest", "predicted_rung_error_rate", "recorded_rung", "carry_first_layer_lost"} <= set(adders.columns)
    assert (out / "mechanism.png").stat().st_size > 50_000 and not list(out.glob(".*"))
    report = (out / "report.md").read_text()
    assert f"{len(margins)} of the study's {len(trials)} adders measured" in report
    assert "| forest on the window (out of fold) | recorded ladder |" in report and "![margins and carry probes](mechanism.png)" in report
    assert "| digits | layers | reaches_10000 | adders | acc_by_layer | top_below_bottom |" in report
