"""Factor importance (fANOVA) on crossed grids whose answer is known: a factor that alone decides a measure gets
nearly all of its importance; the measures are what they say (censored steps, log10 reach)."""

import numpy as np
import pandas as pd
import pytest

from analysis import importance
from analysis.load import Experiment
from analysis.plot_convergence import importance_figure
from tests.analysis_frames import frames, grid, trial
from tune_adder.metrics import probe_column

AXES = dict(digits=(10, 20), lr=(0.001, 0.01), layers=(1, 2), cell=("RNN", "GRU"))


def with_probes(trials: pd.DataFrame) -> pd.DataFrame:
    """1-layer adders exact on carry chains up to 10,000 digits, 2-layer ones nowhere; uniform sums pass everywhere."""
    trials = trials.copy()
    for n in (100, 1000, 10_000):
        trials[probe_column("uniform", n)] = 1.0
        trials[probe_column("carry_chain", n)] = np.where(trials["layers"] == 1, 1.0, 0.5)
    return trials


@pytest.fixture(scope="module")
def lr_decides():
    """Steps to solve depend on the learning rate alone: 200 at lr 0.01, 800 at lr 0.001, whatever else."""
    history, trials = frames(grid(lambda c: 200 if c["lr"] == 0.01 else 800, seeds=(0, 1), **AXES))
    return history, with_probes(trials)


def test_a_factor_that_alone_decides_a_measure_gets_nearly_all_its_importance(lr_decides):
    table = importance.factor_importance(lr_decides[1]).set_index(["measure", "factor"])["importance"]
    assert table[(importance.STEPS, "lr")] > 0.95
    assert table[(importance.CARRY_REACH, "layers")] > 0.95 and table[(importance.CARRY_TOP, "layers")] > 0.95
    for measure in importance.MEASURES:
        assert table[measure].sum() == pytest.approx(1.0)
    assert table[(importance.STEPS, "cell")] < 0.05 and table[(importance.CARRY_REACH, "digits")] < 0.05


def test_importance_is_seeded(lr_decides):
    """Seeds add noise to the steps: the forest's random choices then matter, and a fixed seed repeats them."""
    trials = lr_decides[1].copy()
    trials["steps_to_solve"] = (trials["steps_to_solve"] + 50 * ((trials["seed"] * 7 + trials["layers"] * 3) % 5)).astype("Int64")
    first, again = importance.factor_importance(trials), importance.factor_importance(trials)
    assert first["importance"].tolist() == again["importance"].tolist()


def test_measures_censor_the_unsolved_and_take_log10_of_the_carry_chain_reach():
    _, trials = frames([trial(solve_at=300, seed=0, layers=1), trial(solve_at=None, seed=1, layers=2),
                        trial(solve_at=None, seed=2, layers=1, digits=20)])
    trials = with_probes(trials)  # the 2-layer adder fails at 100 already: its reach is its trained length, 10
    trials.loc[2, probe_column("carry_chain", 1000)] = 0.5  # passes 100, fails 1,000: its reach is 100
    measured = importance.measures(trials)
    assert measured[importance.STEPS].tolist() == [300, 1050, 1050]  # never solved: max_steps (1000) + 50
    assert measured[importance.CARRY_REACH].tolist() == pytest.approx([4.0, 1.0, 2.0])  # 10,000; 10; 100
    assert measured[importance.CARRY_TOP].tolist() == [1.0, 0.0, 0.0]  # the last passes 10,000, but not 1,000


def test_a_measure_without_variance_has_no_importance(lr_decides):
    trials = lr_decides[1].assign(steps_to_solve=pd.array([300] * len(lr_decides[1]), dtype="Int64"))
    table = importance.factor_importance(trials).set_index(["measure", "factor"])
    assert table.loc[importance.STEPS, "importance"].isna().all()  # not 1/4 each, as Optuna would say


def test_the_figure_is_drawn_only_on_a_crossed_grid_and_its_csv_is_the_table(lr_decides, tmp_path):
    history, trials = lr_decides
    entries = importance_figure(Experiment(tmp_path, history, trials), tmp_path, skipped := [])
    assert [e.name for e in entries] == ["factor_importance"] and not skipped
    saved = pd.read_csv(tmp_path / "factor_importance.csv")
    assert saved["importance"].tolist() == pytest.approx(importance.factor_importance(trials)["importance"].tolist())
    one_cell = trials[trials["cell"] == "RNN"]
    assert importance_figure(Experiment(tmp_path, history, one_cell), tmp_path / "x", skipped) == []
    assert skipped and skipped[0].startswith("factor_importance: not a crossed grid")
