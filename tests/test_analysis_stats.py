"""The study's statistics: verdicts that cannot depend on which run carries which seed label, exact p-value floors,
Holm, and the sustained solve rule, on the committed full study and on hand-set values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.claims import Outcome, check_claims, claims_frame, verdict
from analysis.load import load_experiment
from analysis.stats import compare, holm, min_p_value, rank_test, share_interval, solved_streak_start
from tune_adder.metrics import TRIAL_ID

DATA = Path(__file__).resolve().parents[1] / "data" / "full-seeds3"
CONFIG = ["digits", "lr", "layers", "cell"]


@pytest.fixture(scope="module")
def study():
    """A slice of the committed full study: 10 and 20 digits, 1-2 layers, lr 0.001/0.01, every cell (72 real runs)."""
    e = load_experiment(DATA)
    keep = e.trials["digits"].isin([10, 20]) & e.trials["layers"].isin([1, 2]) & e.trials["lr"].isin([0.001, 0.01])
    trials = e.trials[keep].reset_index(drop=True)
    return e.history[e.history[TRIAL_ID].isin(trials[TRIAL_ID])].reset_index(drop=True), trials


def relabel(history: pd.DataFrame, trials: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same runs under other labels: seed numbers permuted within each config, new trial ids, rows shuffled."""
    trials = trials.copy()
    for _, index in trials.groupby(CONFIG).groups.items():
        trials.loc[index, "seed"] = rng.permutation(trials.loc[index, "seed"].to_numpy())
    new_ids = dict(zip(trials[TRIAL_ID], [f"x{n:04d}" for n in rng.permutation(len(trials))]))
    trials[TRIAL_ID] = trials[TRIAL_ID].map(new_ids)
    history = history.assign(**{TRIAL_ID: history[TRIAL_ID].map(new_ids)})
    return (history.sample(frac=1, random_state=int(rng.integers(1 << 31))).reset_index(drop=True),
            trials.sample(frac=1, random_state=int(rng.integers(1 << 31))).reset_index(drop=True))


def _claims(history, trials) -> pd.DataFrame:
    return claims_frame(check_claims(history, trials)).sort_values("claim").reset_index(drop=True)


@pytest.mark.slow
def test_relabelling_runs_within_a_setting_changes_no_verdict_and_no_number(study):
    """Seed labels, trial ids and row order carry no information: every verdict, p-value and interval stays."""
    history, trials = study
    before = _claims(history, trials)
    rng = np.random.default_rng(7)
    for _ in range(3):
        after = _claims(*relabel(history, trials, rng))
        pd.testing.assert_frame_equal(before, after)


@pytest.mark.slow
def test_relabelling_changes_no_pooled_factor_answer(study):
    from analysis.crossed import pooled_claims

    history, trials = study
    before = pooled_claims(history, trials)
    assert len(before) and before["p"].notna().all()
    after = pooled_claims(*relabel(history, trials, np.random.default_rng(3)))
    pd.testing.assert_frame_equal(before, after)


def test_an_exact_test_of_three_against_three_cannot_reach_five_percent():
    assert min_p_value(3, 3) == pytest.approx(0.1)
    p, statistic = rank_test([100, 150, 200], [500, 600, 700])  # fully separated: the best 3 seeds can do
    assert p == pytest.approx(0.1) and statistic < 0
    assert rank_test([100, 150, 200, 210, 220, 230], [500, 600, 700, 800, 900, np.inf])[0] == pytest.approx(2 / 924)
    assert min_p_value(10, 10) < 0.001


def test_independent_settings_are_not_paired_by_seed():
    """Seed i of one setting beating seed i of the other, with the values interleaved, is no evidence."""
    a, b = [100, 300, 500], [150, 350, 550]  # a's seed i beats b's seed i every time
    result = compare(a, b, "steps to solve")
    assert result.p > 0.5
    assert result.difference[1] < 0 < result.difference[2]  # the difference interval spans 0


def test_holm_adjusts_step_down_and_keeps_the_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2]) == pytest.approx([0.2])


def test_verdict_rules_correct_for_multiplicity_and_say_mixed_and_undecidable():
    sure_for, sure_against = Outcome(1e-4, True, 1e-5, True), Outcome(1e-4, False, 1e-5, True)
    weak_for = Outcome(0.04, True, 1e-5, True)  # significant alone, not after Holm among 3
    assert verdict([sure_for, sure_for]) == "supported"
    assert verdict([sure_for, sure_against]) == "mixed"
    assert verdict([sure_against, Outcome(0.5, True, 1e-5, True)]) == "refuted"
    assert verdict([sure_for, Outcome(0.5, None, 1e-5, True)]) == "partly supported"
    assert verdict([weak_for, Outcome(0.5, True, 1e-5, True), Outcome(0.6, True, 1e-5, True)]) == "inconclusive"
    assert verdict([Outcome(0.1, True, 0.1, True)] * 3) == "undecidable"  # 3 vs 3 seeds: nothing can be decided
    assert verdict([Outcome(0.1, True, 0.1, False)]) == "suggested"
    assert verdict([]) == "not testable"


def test_solved_means_three_evaluations_in_a_row():
    steps = [50, 100, 150, 200, 250, 300]
    assert solved_streak_start(zip(steps, [1, 1, 0, 1, 1, 0])) == np.inf  # touched 1.0 four times, never 3 in a row
    assert solved_streak_start(zip(steps, [1, 1, 0, 1, 1, 1])) == 200
    assert solved_streak_start(zip(steps, [0, 1, 1, 1, 0, 0])) == 100  # then lost: still solved at 100 (a regression)


def test_share_interval_is_exact_clopper_pearson():
    share, low, high = share_interval(3, 3)
    assert share == 1 and high == 1 and low == pytest.approx(0.025 ** (1 / 3))
    assert share_interval(0, 10)[1] == 0


def test_several_folders_are_one_study_with_each_run_once(tmp_path):
    """The full study plus extra seeds run later: a run (config and seed) in two folders counts once, trial ids the
    folders share are kept apart, and the merged frames carry every other run."""
    from analysis.load import load_study
    from tests.analysis_frames import grid, write_experiment

    first = write_experiment(tmp_path / "first", grid(lambda c: 300, seeds=(0, 1, 2), digits=(10, 20)))
    # the second folder repeats seed 2 (a copy) and adds seeds 3, 4; its trial ids t0000.. collide with the first's
    second = write_experiment(tmp_path / "second", grid(lambda c: 500, seeds=(2, 3, 4), digits=(10, 20)))
    study = load_study([first, second])
    assert len(study.trials) == 2 * 5 and study.trials["trial_id"].is_unique
    assert sorted(study.trials.groupby("digits")["seed"].apply(list).iloc[0]) == [0, 1, 2, 3, 4]
    seed2 = study.trials[study.trials["seed"] == 2]
    assert (seed2["steps_to_solve"] == 300).all()  # the first folder's run, not the repeat
    assert any("2 runs already in an earlier folder" in n for n in study.notes)
    assert set(study.history["trial_id"]) == set(study.trials["trial_id"])
    assert len(study.settings["merged_from"]) == 2
