"""Extraction, bands and the convergence measure on small hand-built frames."""

import numpy as np
import pytest

from analysis.extract import curves, hold_fixed, solve_heatmap
from analysis.stats import LOSS_AREA, STEPS_TO_SOLVE, band, converges_faster
from tests.analysis_frames import frames, trial


def test_band_is_the_range_up_to_three_seeds_and_a_seeded_bootstrap_above():
    assert band([1.0, 3.0]) == (2.0, 1.0, 3.0, "range")
    assert band([1.0, 5.0, 3.0]) == (3.0, 1.0, 5.0, "range")  # a bootstrap of 3 values is their range: called that
    values = [1.0, 2.0, 6.0, 3.0]
    mean, low, high, kind = band(values)
    assert (mean, kind) == (3.0, "bootstrap95")
    assert 1.0 <= low < mean < high <= 6.0
    assert band(values) == (mean, low, high, kind)  # seeded: the same numbers every call
    assert band(values[::-1]) == (mean, low, high, kind)  # and whatever the order of the seeds


def test_median_band_keeps_unsolved_seeds_infinite():
    median, low, high, _ = band([100.0, np.inf, np.inf], np.median)
    assert median == np.inf and low == 100.0 and high == np.inf


def test_curves_mean_band_and_end_markers():
    specs = [trial(solve_at=300, seed=0), trial(solve_at=500, seed=1),
             trial(solve_at=None, end_at=400, stop_reason="early_stopped", seed=2),
             trial(solve_at=200, seed=0, lr=0.01), trial(solve_at=None, diverge_at=300, seed=1, lr=0.01)]
    history, trials = frames(specs)
    frame, chosen = curves(history, trials, "lr", "digits", "train_loss")
    assert chosen.fixed == {}
    slow = frame[(frame["series"] == 0.001) & (frame["kind"] == "mean")].set_index("step")
    at_200 = history[(history["lr"] == 0.001) & (history["step"] == 200)]["train_loss"]
    assert slow.loc[200, "value"] == pytest.approx(10 ** np.log10(at_200).mean())  # a loss: the geometric mean
    assert slow.loc[200, "band"] == "range" and slow.loc[200, "n_seeds"] == 3
    assert slow.loc[500, "n_seeds"] == 2 and slow.loc[500, "band"] == "range"  # the ASHA-cut seed ended at 400
    cut = frame[frame["kind"] == "early_stopped"]
    assert cut[["series", "step", "seed"]].values.tolist() == [[0.001, 400, 2]]
    fast = frame[(frame["series"] == 0.01) & (frame["kind"] == "mean")].set_index("step")
    assert fast.loc[200, "n_seeds"] == 2 and fast.loc[300, "n_seeds"] == 1  # the diverged seed leaves the mean
    assert fast.loc[300, "band"] == "none"
    diverged = frame[frame["kind"] == "diverged"]
    assert diverged[["series", "step"]].values.tolist() == [[0.01, 200]]  # at its last finite loss
    assert set(frame["panel"]) == {10}


def test_figure_holds_unplotted_factors_at_the_seed_default_or_the_commonest_value():
    specs = [trial(solve_at=300, seed=s, lr=lr, layers=n) for s in (0, 1) for lr in (0.001, 0.01) for n in (2, 3)]
    specs += [trial(solve_at=300, seed=0, hidden=128)]
    _, trials = frames(specs)
    chosen = hold_fixed(trials, ("digits", "lr"))
    assert chosen.fixed == {"layers": 2, "hidden": 64}
    assert any("hidden held at 64" in note for note in chosen.notes)
    no_default = trials[trials["lr"] == 0.01]
    assert hold_fixed(no_default, ("digits", "layers")).fixed == {}


def test_single_panel_figure_has_no_panel_column_values():
    history, trials = frames([trial(solve_at=300, digits=d, seed=s) for d in (10, 20) for s in (0, 1)])
    frame, _ = curves(history, trials, "digits", None, "val_exact_match")
    assert frame["panel"].isna().all() and set(frame["series"]) == {10, 20}


def test_heatmap_median_steps_to_solve_and_unsolved_cells():
    specs = [trial(solve_at=s, seed=i, lr=0.01) for i, s in enumerate((200, 300, 400))]
    specs += [trial(solve_at=s, seed=i, lr=0.001) for i, s in enumerate((900, None, None))]
    _, trials = frames(specs)
    heat, _ = solve_heatmap(trials)
    fast = heat[heat["lr"] == 0.01].iloc[0]
    slow = heat[heat["lr"] == 0.001].iloc[0]
    assert (fast["median_steps_to_solve"], fast["n_solved"], fast["n_seeds"]) == (300, 3, 3)
    assert np.isnan(slow["median_steps_to_solve"]) and slow["n_solved"] == 1 and slow["high"] == np.inf


def test_converges_faster_reports_both_measures_each_with_its_test():
    history, trials = frames([trial(solve_at=s, seed=i, lr=lr) for lr, solves in ((0.01, (200, 300, 300)), (0.001, (600, 700, 700)))
                              for i, s in enumerate(solves)])
    result = converges_faster(history, trials[trials["lr"] == 0.01], trials[trials["lr"] == 0.001])
    steps, loss = result[STEPS_TO_SOLVE], result[LOSS_AREA]
    assert steps.lower == "a" and steps.a == (300, 200, 300) and steps.p == pytest.approx(0.1)  # 3 vs 3: the floor
    assert loss.lower == "a" and loss.a[0] < loss.b[0]
    # neither solves within max_steps: steps to solve tie (both censored), the loss still tells them apart
    specs = [trial(solve_at=None, seed=i, lr=0.01, max_steps=300) for i in range(3)]  # its loss falls faster
    specs += [trial(solve_at=None, seed=i, lr=0.001, max_steps=600) for i in range(3)]
    history, trials = frames(specs)
    result = converges_faster(history, trials[trials["lr"] == 0.01], trials[trials["lr"] == 0.001])
    assert result[STEPS_TO_SOLVE].lower is None and result[STEPS_TO_SOLVE].p == 1.0
    assert result[LOSS_AREA].lower == "a"


def test_heatmap_leaves_out_cells_run_at_a_single_lr_and_depth():
    specs = [trial(solve_at=300, seed=i, lr=lr, layers=n) for i in range(3) for lr, n in ((0.001, 2), (0.01, 2), (0.001, 3))]
    specs += [trial(solve_at=400, seed=i, cell="GRU") for i in range(3)]
    _, trials = frames(specs)
    heat, chosen = solve_heatmap(trials)
    assert set(heat["cell"]) == {"RNN"} and len(heat) == 3
    assert chosen.notes == ["cells ['GRU'] left out: run at one (lr, layers) per digit length only"]
