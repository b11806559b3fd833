"""What the paper figures draw, checked on small hand-built frames (the data, not the pixels): the reach shares, the
loss curves' geometric mean and seed lines, fig 8's differences between cells, the heat map's range."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from analysis import crossed
from analysis.extract import cell_differences, curves, solve_heatmap
from analysis.load import Experiment
from analysis.plot_convergence import reach_figure
from tests.analysis_frames import frames, trial
from tune_adder.metrics import CARRY_CHAIN_METRIC, PROBE_COLUMNS, probe_column

PASS, FAIL = 1.0, 0.5


def probes(uniform=(PASS, PASS, PASS), carry=(PASS, PASS, PASS)) -> dict:
    """Probe exact matches at 100, 1,000 and 10,000 digits."""
    return {**{probe_column("uniform", n): v for n, v in zip((100, 1000, 10_000), uniform)},
            **{probe_column("carry_chain", n): v for n, v in zip((100, 1000, 10_000), carry)}}


def probed(solve_at, seed, layers=1, probe=None, **config) -> dict:
    spec = trial(solve_at=solve_at, seed=seed, layers=layers, **config)
    spec["probes"] = probe if probe is not None else probes()
    return spec


@pytest.fixture(scope="module")
def ladder():
    """RNN, 1 layer: seed 0 exact everywhere; seed 1 fails uniform sums at 100 digits but passes 1,000 and 10,000;
    seed 2 passes every probe but is no longer exact at its trained length (uniform); seed 3 never solved (all
    probes pass: it must still be left out); seed 4 unprobed (cut short); seed 5 still running. 2 layers: no seed
    solved."""
    specs = [probed(300, 0), probed(300, 1, probe=probes(uniform=(FAIL, PASS, PASS))), probed(300, 2),
             probed(None, 3), trial(solve_at=300, seed=4), probed(300, 5, stop_reason="running")]
    specs += [probed(None, s, layers=2) for s in range(3)]
    _, trials = frames(specs)
    trials[f"final_{CARRY_CHAIN_METRIC}"] = PASS
    trials.loc[trials["seed"] == 2, "final_val_exact_match"] = 0.98
    return trials


def test_reach_shares_leave_never_solved_adders_out_and_count_a_rung_only_after_every_shorter_one(ladder):
    shares = crossed.reach_shares(ladder)
    uniform, carry, nobody = (shares[(shares["layers"] == n) & (shares["kind"] == k)].set_index("rung")
                              for n, k in ((1, "uniform"), (1, "carry_chain"), (2, "uniform")))
    assert uniform["n"].tolist() == [3, 3, 3, 3]  # seeds 0-2: the never-solved, unprobed and running are not in n
    assert (uniform["never_solved"] == 1).all() and (uniform["adders"] == 4).all()
    # trained: seeds 0 and 1 (seed 2 relapsed); 100: seed 0 (seed 1 fails); 1,000 and 10,000: seed 1 passes them,
    # but after failing 100 it does not count
    assert uniform["hits"].tolist() == [2, 1, 1, 1]
    assert carry["hits"].tolist() == [3, 3, 3, 3]
    low, high = binomtest(1, 3).proportion_ci(method="exact")
    assert (uniform.loc["100", "share"], uniform.loc["100", "low"], uniform.loc["100", "high"]) == pytest.approx(
        (1 / 3, low, high))
    nobody = nobody.loc["trained"]
    assert (nobody["n"], nobody["never_solved"], nobody["adders"]) == (0, 3, 3)
    assert np.isnan(nobody["share"]) and np.isnan(nobody["low"])


def test_reach_figure_writes_exactly_the_shares_at_most_1600_px_wide(ladder, tmp_path):
    from PIL import Image

    history, _ = frames([trial(solve_at=300)])
    three_cells = pd.concat([ladder.assign(cell=cell) for cell in ("RNN", "LSTM", "GRU")], ignore_index=True)
    skipped = []
    entries = reach_figure(Experiment(tmp_path, history, three_cells), tmp_path, skipped)
    assert [e.name for e in entries] == ["generalisation_reach"] and not skipped
    saved = pd.read_csv(tmp_path / "generalisation_reach.csv", dtype={"rung": str})
    expected = crossed.reach_shares(three_cells)
    assert saved[["cell", "layers", "kind", "rung", "hits", "n", "never_solved"]].values.tolist() == \
        expected[["cell", "layers", "kind", "rung", "hits", "n", "never_solved"]].values.tolist()
    assert Image.open(tmp_path / "generalisation_reach.png").size[0] <= 1600


def test_loss_curves_are_the_geometric_mean_with_each_seed_and_an_honestly_named_band():
    specs = [trial(solve_at=s, seed=i) for i, s in enumerate((200, 400, 800))]
    specs += [trial(solve_at=s, seed=i, lr=0.01) for i, s in enumerate((200, 300, 400, 500))]
    history, trials = frames(specs)
    frame, _ = curves(history, trials, "lr", None, "train_loss")
    means = frame[frame["kind"] == "mean"].set_index(["series", "step"])
    at = history[(history["lr"] == 0.001) & (history["step"] == 300)]["train_loss"].to_numpy()
    three = means.loc[(0.001, 300)]
    assert three["value"] == pytest.approx(10 ** np.mean(np.log10(at)))  # the mean of log10, back on the loss axis
    assert three["value"] < at.mean() * 0.9  # not the arithmetic mean, which one slow seed drags up
    assert three["band"] == "range" and (three["low"], three["high"]) == pytest.approx((at.min(), at.max()))  # 3 seeds
    four = means.loc[(0.01, 300)]
    assert four["band"] == "bootstrap95" and four["low"] < four["value"] < four["high"]
    seeds = frame[(frame["kind"] == "seed") & (frame["series"] == 0.001) & (frame["step"] == 300)]
    assert sorted(seeds["value"]) == pytest.approx(sorted(at)) and sorted(seeds["seed"]) == [0, 1, 2]
    exact, _ = curves(history, trials, "lr", None, "val_exact_match")  # not a loss: the plain mean
    at = history[(history["lr"] == 0.001) & (history["step"] == 300)]["val_exact_match"]
    assert exact[exact["kind"] == "mean"].set_index(["series", "step"]).loc[(0.001, 300), "value"] == pytest.approx(at.mean())


def test_cell_differences_are_of_mean_log10_loss_with_each_cells_seeds_resampled_on_their_own():
    """Three LSTM seeds against four RNN seeds (a paired bootstrap could not even pair them); no GRU: one pair."""
    specs = [trial(solve_at=s, seed=i, cell="LSTM") for i, s in enumerate((300, 500, 700))]
    specs += [trial(solve_at=s, seed=i, cell="RNN") for i, s in enumerate((200, 250, 300, 350))]
    history, trials = frames(specs)
    frame, chosen = cell_differences(history, trials, "train_loss")
    assert set(frame["pair"]) == {"LSTM - RNN"} and set(frame["panel"]) == {10}
    row = frame.set_index("step").loc[400]
    at = history[history["step"] == 400]
    lstm, rnn = (np.log10(at.loc[at["cell"] == c, "train_loss"].to_numpy()) for c in ("LSTM", "RNN"))
    assert row["value"] == pytest.approx(lstm.mean() - rnn.mean()) and (row["n_a"], row["n_b"]) == (3, 4)
    assert row["band"] == "bootstrap95" and row["low"] < row["value"] < row["high"]
    # resampled means never leave the seeds' extremes: the interval lies within them
    assert lstm.min() - rnn.max() <= row["low"] and row["high"] <= lstm.max() - rnn.min()
    again, _ = cell_differences(history, trials, "train_loss")
    pd.testing.assert_frame_equal(frame, again)  # seeded: the same figure every run


def test_heatmap_brackets_are_the_range_of_steps_over_seeds():
    _, trials = frames([trial(solve_at=s, seed=i, lr=lr) for lr, solves in ((0.01, (200, 300, 600)), (0.001, (400, None, 500)))
                        for i, s in enumerate(solves)])
    heat = solve_heatmap(trials)[0].set_index("lr")
    assert heat.loc[0.01, ["median_steps_to_solve", "low", "high", "band"]].tolist() == [300, 200, 600, "range"]
    assert heat.loc[0.001, ["median_steps_to_solve", "low", "high", "n_solved"]].tolist() == [500, 400, np.inf, 2]


def test_unprobed_frames_have_no_reach_shares():
    _, trials = frames([trial(solve_at=300, seed=s) for s in range(2)])
    assert trials[list(PROBE_COLUMNS[:-2])].isna().all().all() and crossed.reach_shares(trials).empty
