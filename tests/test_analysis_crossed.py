"""The crossed-grid analysis on constructed sweeps whose answers are known: claims per cell, lr and depth,
the settings that never solve, and the length-generalisation reach with its figure."""

import numpy as np
import pandas as pd
import pytest

from analysis import crossed, report
from analysis.stats import share_band
from analysis.plot_convergence import main
from tests.analysis_frames import frames, grid, write_experiment
from tests.test_analysis_claims import AXES, as_claimed
from tune_adder.metrics import CARRY_CHAIN_METRIC, PROBE_COLUMNS, probe_column


def lstm_fails_at_lr_01(c: dict) -> int | None:
    """The seed's world, except that an LSTM at lr 0.1 never solves, and a 1-layer GRU at lr 0.1 solves 10 digits
    with seed 0 only."""
    if (c["cell"], c["lr"], c["layers"], c["digits"]) == ("GRU", 0.1, 1, 10) and c.get("seed", 0) != 0:
        return None
    return None if (c["cell"], c["lr"]) == ("LSTM", 0.1) else as_claimed(c)


SEEDS = tuple(range(8))  # enough for a decided verdict (tests/test_analysis_claims.py)


@pytest.fixture(scope="module")
def world():
    return frames(grid(lstm_fails_at_lr_01, eval_every=50, **AXES))


SMALL = {**AXES, "digits": (10, 20)}  # crossed, and quick to analyse


@pytest.fixture(scope="module")
def world8():
    """The same world at 10 and 20 digits with enough seeds that its verdicts can be decided."""
    return frames(grid(lstm_fails_at_lr_01, seeds=SEEDS, eval_every=50, **SMALL))


def test_a_full_factorial_is_crossed_and_a_one_factor_grid_is_not(world):
    assert crossed.is_crossed(world[1])
    one_factor = frames(grid(as_claimed, digits=(10, 20), lr=(0.001, 0.01)))[1]
    assert not crossed.is_crossed(one_factor)
    holes = world[1][~((world[1]["cell"] == "GRU") & (world[1]["layers"] == 3) & (world[1]["digits"] == 50))]
    assert not crossed.is_crossed(holes)


@pytest.mark.slow
def test_claims_are_rechecked_where_the_seed_never_looked(world8):
    results = {r.claim: r for r in crossed.crossed_claims(*world8)}
    assert not {"C2", "C4", "C6"} & set(results)  # the seed's own settings live in the main table
    for n in AXES["layers"]:  # lr 0.1 fails for the LSTM at every depth while lr 0.01 wins: C3 mixed there
        assert results[f"C3 [LSTM, {crossed_label(n)}, 10/20 digits]"].verdict == "mixed"
        assert results[f"C3 [RNN, {crossed_label(n)}, 10/20 digits]"].verdict == "supported"
        gru = results[f"C3 [GRU, {crossed_label(n)}, 10/20 digits]"].verdict
        assert gru == "supported" if n > 1 else gru == "mixed"  # 1 layer: lr 0.1 fails 7 of 8 seeds at 10 digits
    assert results["C6 [GRU, 2 layers, lr 0.01]"].verdict == "supported"
    assert results["C2 [LSTM, 2 layers, lr 0.01]"].verdict == "supported"
    assert results["C2 [LSTM, 2 layers, lr 0.1]"].verdict == "inconclusive"  # never solves at any length: no order
    assert all(r.evidence for r in results.values() if r.verdict != "not testable")
    tally = report.verdict_tally(list(results.values())).set_index("claim")
    assert tally.loc["C3", "mixed"] == len(AXES["layers"]) + 1 and tally.loc["C3", "checks"] == 3 * len(AXES["layers"])
    assert tally.loc["C3", "supported"] == 2 * len(AXES["layers"]) - 1  # RNN everywhere, GRU but at 1 layer
    assert tally.columns[0] == "supported" and tally["checks"].sum() == len(results)  # verdicts in a fixed order


def crossed_label(n: int) -> str:
    return f"{n} layer" + ("s" if n != 1 else "")


def test_never_solved_lists_exactly_the_settings_no_seed_solves(world):
    never = crossed.never_solved(world[1])
    settings = [dict(digits=d, lr=lr, layers=n, cell=c) for d in AXES["digits"] for lr in AXES["lr"]
                for n in AXES["layers"] for c in AXES["cell"]]
    solve = {tuple(c.values()): lstm_fails_at_lr_01(c) for c in settings}
    expected = {(d, c, lr, n) for (d, lr, n, c), at in solve.items() if at is None or at > 1000}  # 1000 = max_steps
    assert {(d, "LSTM", 0.1, n) for d in AXES["digits"] for n in AXES["layers"]} <= expected
    assert (10, "GRU", 0.1, 1) not in expected  # one seed of three solves: not "never"
    assert set(never[["digits", "cell", "lr", "layers"]].itertuples(index=False, name=None)) == expected
    assert (never["n_seeds"] == 3).all()


def with_probes(trials: pd.DataFrame) -> pd.DataFrame:
    """GRU adders exact everywhere; RNNs exact on uniform sums to 10,000 but on carry chains only to 100;
    LSTMs generalise nowhere, not even to carry chains of their trained length; one GRU seed at 10 digits fails at
    1,000."""
    trials = trials.copy()
    for i, row in trials.iterrows():
        for kind in ("uniform", "carry_chain"):
            for n in (100, 1000, 10000):
                ok = {"GRU": True, "LSTM": False, "RNN": kind == "uniform" or n == 100}[row["cell"]]
                if row["cell"] == "GRU" and row["digits"] == 10 and row["seed"] == 0 and n >= 1000:
                    ok = False
                trials.loc[i, probe_column(kind, n)] = 1.0 if ok else 0.5
        trials.loc[i, f"final_{CARRY_CHAIN_METRIC}"] = 0.5 if row["cell"] == "LSTM" else 1.0  # at the trained length
    return trials


def test_reach_per_kind_median_and_spread_over_seeds(world):
    reach = crossed.reach_frame(with_probes(world[1])).set_index(["cell", "digits", "lr", "layers", "kind"])
    assert reach.loc[("GRU", 20, 0.01, 2, "carry_chain"), "median_reach"] == 10000
    gru10 = reach.loc[("GRU", 10, 0.01, 2, "uniform")]
    assert (gru10["median_reach"], gru10["min_reach"], gru10["max_reach"], gru10["n_beyond"]) == (10000, 100, 10000, 3)
    rnn = reach.loc[("RNN", 10, 0.001, 1)]
    assert rnn.loc["uniform", "median_reach"] == 10000 and rnn.loc["carry_chain", "median_reach"] == 100
    lstm = reach.loc[("LSTM", 50, 0.001, 1, "carry_chain")]
    assert lstm["median_reach"] == 50 and lstm["n_beyond"] == 0  # the trained length: nothing beyond it
    table = crossed.reach_table(with_probes(world[1])).set_index(["cell", "lr", "kind"])
    # RNN on carry chains: every adder trained below 100 digits passes 100 (3 lengths x 3 depths x 3 seeds = 27)
    assert table.loc[("RNN", 0.001, "carry_chain"), "reach >= 100"] == "27/27"
    assert table.loc[("RNN", 0.001, "carry_chain"), "reach >= 1,000"] == "0/36"
    assert table.loc[("GRU", 0.001, "uniform"), "reach >= 10,000"] == "33/36"  # 3 depths x seed 0 at 10 digits fail


def test_unprobed_trials_are_left_out_of_the_reach(world):
    trials = with_probes(world[1])
    trials.loc[trials["cell"] == "LSTM", list(PROBE_COLUMNS[:-2])] = np.nan  # e.g. cut short by ASHA
    assert set(crossed.reach_frame(trials)["cell"]) == {"RNN", "GRU"}
    assert not crossed.has_probes(world[1])


@pytest.mark.slow
def test_plot_script_on_a_crossed_sweep_writes_the_crossed_report_and_the_reach_figure(world, tmp_path):
    folder = tmp_path / "crossed"
    small = {**AXES, "digits": (10, 20), "layers": (1, 2)}  # crossed, and quick to analyse
    write_experiment(folder, grid(lstm_fails_at_lr_01, seeds=SEEDS, eval_every=50, **small))
    trials = pd.read_parquet(folder / "trials.parquet")
    with_probes(trials).to_parquet(folder / "trials.parquet")
    assert main([str(folder)]) == 0
    out = folder / "analysis"
    for name in ("generalisation_reach", "heatmap_steps_to_solve"):
        assert (out / f"{name}.png").stat().st_size > 10_000 and (out / f"{name}.csv").exists()
    report = (out / "report.md").read_text()
    assert "## The claims in every stratum of the crossed grid" in report and "C3 [LSTM, 1 layer, 10/20 digits]" in report
    assert "## Each factor claim as a whole" in report and "## Where more seeds would decide" in report
    pooled = pd.read_csv(out / "claims_pooled.csv")
    c3 = pooled[(pooled["claim"] == "C3") & (pooled["measure"] == "steps to solve")]
    # lr 0.01 is faster in every stratum; lr 0.1 is faster for RNN and GRU but never solves for the LSTM: as a whole
    # not significant either way over these 12 strata, and the LSTM strata are named where it flips
    assert set(c3["verdict"]) == {"partly supported"}
    flips = c3.set_index("pair").loc["lr 0.1 vs lr 0.001", "flips"]
    assert all(f"LSTM, {crossed_label(n)}" in flips for n in small["layers"])
    assert "### Settings that never solve" in report and "### Who learned the algorithm" in report
    crossed_csv = pd.read_csv(out / "claims_crossed.csv")
    assert "mixed" in set(crossed_csv["verdict"])
    assert "### What each factor does" in report and "**cell x layers**" in report
    effects = pd.read_csv(out / "factor_effects.csv").set_index(["factor", "value"])
    lstm = effects.loc[("cell", "LSTM")]  # lr 0.1 never solves: 2 of its 3 lrs solve (as_claimed: all by 1000 here)
    assert (lstm["solved_hits"], lstm["solved_of"], lstm["carry_top_hits"]) == (64, 96, 0)


def test_reach_of_an_even_number_of_seeds_is_a_probed_length_most_seeds_reach(world):
    """Two seeds reaching 100 and 10,000: the midpoint 5,050 is no probed length; the reach shown is 100."""
    probed = with_probes(world[1])
    two_seeds = probed[probed["seed"] != 1]  # GRU at 10 digits: seed 0 reaches 100, seed 2 reaches 10,000
    reach = crossed.reach_frame(two_seeds).set_index(["cell", "digits", "lr", "layers", "kind"])
    gru10 = reach.loc[("GRU", 10, 0.01, 2, "uniform")]
    assert (gru10["median_reach"], gru10["min_reach"], gru10["max_reach"], gru10["n_seeds"]) == (100, 100, 10000, 2)
    four = pd.concat([probed, probed[probed["seed"] == 0].assign(seed=3)])  # seeds reach 100, 10k, 10k and 100
    assert crossed.reach_frame(four).set_index(["cell", "digits", "lr", "layers", "kind"]).loc[
        ("GRU", 10, 0.01, 2, "uniform"), "median_reach"] == 100


def test_factor_effects_count_solved_adders_and_which_of_them_generalise(world):
    """Shares per factor value against counts taken from the world's own rules; intervals that resample configs."""
    probed = with_probes(world[1])
    trials = [dict(digits=d, lr=lr, layers=n, cell=c, seed=s) for d in AXES["digits"] for lr in AXES["lr"]
              for n in AXES["layers"] for c in AXES["cell"] for s in (0, 1, 2)]
    solved = [t for t in trials if (at := lstm_fails_at_lr_01(t)) is not None and at <= 1000]  # 1000 = max_steps
    by_cell = crossed.factor_effects(probed, ("cell",)).set_index("cell")
    for cell in AXES["cell"]:
        n_solved, n_all = sum(t["cell"] == cell for t in solved), sum(t["cell"] == cell for t in trials)
        row = by_cell.loc[cell]
        assert (row["solved_hits"], row["solved_of"], row["adders"], row["configs"]) == (n_solved, n_all, n_all, n_all // 3)
        assert row["solved_share"] == pytest.approx(n_solved / n_all)
    # of the solved: GRUs exact on carry chains to 10,000 except seed 0 trained on 10 digits; RNNs on uniform sums only
    gru = [t for t in solved if t["cell"] == "GRU"]
    misses = sum(t["digits"] == 10 and t["seed"] == 0 for t in gru)
    assert (by_cell.loc["GRU", "carry_top_hits"], by_cell.loc["GRU", "carry_top_of"]) == (len(gru) - misses, len(gru))
    assert (by_cell.loc["LSTM", "carry_trained_hits"], by_cell.loc["RNN", "carry_trained_share"]) == (0, 1.0)
    assert by_cell.loc["GRU", "carry_trained_hits"] == by_cell.loc["GRU", "solved_hits"] == len(gru)
    rnn = by_cell.loc["RNN"]
    n_rnn = sum(t["cell"] == "RNN" for t in solved)
    assert (rnn["uniform_top_hits"], rnn["uniform_top_of"], rnn["uniform_top_low"], rnn["uniform_top_high"]) == (n_rnn, n_rnn, 1, 1)
    assert (rnn["carry_top_hits"], rnn["carry_top_share"], rnn["carry_top_high"]) == (0, 0, 0)
    two = crossed.factor_effects(probed, ("cell", "lr")).set_index(["cell", "lr"])
    assert (two.loc[("LSTM", 0.1), "solved_hits"], two.loc[("LSTM", 0.1), "solved_of"]) == (0, 36)  # never solves
    assert two.loc[("LSTM", 0.1), "carry_top_of"] == 0 and np.isnan(two.loc[("LSTM", 0.1), "carry_top_share"])
    shown = report.effects_display(two.reset_index()).set_index(["cell", "lr"])
    assert shown.loc[("LSTM", 0.1), "of those, carry chains exact to 10,000"] == "-"  # nobody to probe
    assert shown.loc[("RNN", 0.01), "of those, uniform exact to 10,000"].endswith("= 100% [100%, 100%]")
    # GRU at 10 digits: 8 configs pass 2 of 3 seeds, one (lr 0.1, 1 layer) has 1 solved seed that fails. Resampling
    # configs keeps the share near 2/3; resampling the 25 adders as if independent would widen it to about [44%, 84%].
    gru10 = crossed.factor_effects(probed, ("cell", "digits")).set_index(["cell", "digits"]).loc[("GRU", 10)]
    assert (gru10["carry_top_hits"], gru10["carry_top_of"]) == (16, 25)
    assert 0.55 <= gru10["carry_top_low"] and gru10["carry_top_high"] <= 0.67


def test_a_share_interval_resamples_configs_not_seeds():
    """Two configs, one whose 3 seeds all pass and one whose 3 all fail: the seeds say nothing independent, so the
    interval spans what resampling the 2 configs gives (0 % to 100 %), not the narrower one of 6 independent trials."""
    share, low, high = share_band([3, 0], [3, 3])
    assert (share, low, high) == (0.5, 0.0, 1.0)
    assert share_band([2], [3]) == (2 / 3, 2 / 3, 2 / 3)


def _stop_ladders(trials: pd.DataFrame) -> pd.DataFrame:
    """The probe columns as today's trainer records them: each kind's rungs above its first failing rung are NaN."""
    from tune_adder import generalisation
    from tune_adder.metrics import PROBE_KINDS, PROBE_LADDER

    stopped = trials.copy()
    for kind in PROBE_KINDS:
        failed = pd.Series(False, index=stopped.index)
        for n in PROBE_LADDER:
            column = probe_column(kind, n)
            stopped.loc[failed, column] = np.nan
            failed |= ~stopped[column].map(generalisation.passes)
    return stopped


def test_ladders_stopped_at_their_first_failing_rung_give_every_generalisation_answer_unchanged():
    """The committed study probed every rung; a sweep now stops a kind at its first failing rung (issue 18 item 17).
    The reach, the per-config shares, the pooled shares, the factor effects and the importance measures must read
    both the same: a NaN above a failed rung is a fail, not a trial left unprobed."""
    from pathlib import Path

    from analysis import design, importance
    from analysis.load import load_experiment

    e = load_experiment(Path(__file__).resolve().parents[1] / "data" / "full-seeds3")
    stopped = _stop_ladders(e.trials)
    assert stopped[list(PROBE_COLUMNS[:-2])].isna().sum().sum() > 500  # the masking bites: most adders fail early
    for name, answer in [("reach_frame", crossed.reach_frame), ("reach_table", crossed.reach_table),
                         ("reach_shares", crossed.reach_shares),
                         ("factor_effects", lambda t: crossed.factor_effects(t, ("cell", "layers"))),
                         ("generalisation_by_config", lambda t: design.generalisation_by_config(t, e.history))]:
        pd.testing.assert_frame_equal(answer(stopped), answer(e.trials), obj=name)
    for name, values in importance.measures(e.trials).items():
        pd.testing.assert_series_equal(importance.measures(stopped)[name], values, obj=name)
