"""The issue-19 scripts' pure parts: the retrain check reports every evaluation that differs from the recorded
history (analysis/mechanism_retrain.py), and the rung predictor and the measured rung (analysis/mechanism_predict.py)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import mechanism_predict as predict
from analysis import mechanism_retrain as retrain
from tune_adder.train import EvalMetrics


def _eval(step: int, val_loss: float, exact: float = 1.0) -> EvalMetrics:
    return EvalMetrics(step=step, samples_seen=200 * step, train_loss=0.5, val_loss=val_loss, val_exact_match=exact,
                       val_digit_acc=1.0, carry_chain_exact_match=1.0, longer_exact_match=1.0, steps_per_s=10.0,
                       diverged=False)


def _history(evals: list[EvalMetrics]) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": "t", **e.as_dict()} for e in evals])


def test_a_retrain_equal_to_its_history_matches_and_one_rounding_step_away_does_not():
    evals = [_eval(50, 0.25), _eval(100, 0.125), _eval(150, 0.0625)]
    assert retrain.compare(evals, _history(evals)[::-1])["retrain_matched"] is True  # order of rows does not matter
    off = [evals[0], _eval(100, math.nextafter(0.125, 1.0)), _eval(150, 0.0625, exact=0.999)]
    found = retrain.compare(off, _history(evals))
    assert found["retrain_matched"] is False
    assert found["retrain_mismatched_evals"] == 2 and found["retrain_first_mismatch_step"] == 100
    assert found["retrain_max_abs_diff_val_exact_match"] == pytest.approx(0.001)
    short = retrain.compare(evals[:2], _history(evals))  # a missing evaluation is a mismatch too
    assert short["retrain_matched"] is False and short["retrain_same_steps"] is False


@pytest.mark.parametrize("ladder, rung", [
    ((1.0, 1.0, 1.0), 10_000), ((1.0, 0.99, 0.5), 1_000), ((0.98, 1.0, 1.0), 0),
    ((1.0, float("nan"), float("nan")), 100), ((1.0, None, 1.0), 100),
])
def test_the_measured_rung_is_the_top_of_the_unbroken_run_of_passes(ladder, rung):
    row = dict(zip(("probe_carry_chain_100", "probe_carry_chain_1000", "probe_carry_chain_10000"), ladder))
    assert predict.measured_rung(row) == rung
    assert predict.measured_rung({f"retrained_{k}": v for k, v in row.items()}, "retrained_") == rung


def test_a_flat_margin_is_predicted_to_reach_the_top_and_a_fading_one_to_fail_on_the_way():
    digits = 10
    flat = np.full(10 * digits + 1, 5.0)
    assert predict.predicted_rung(flat, digits) == 10_000
    positions = np.arange(10 * digits + 1)
    fading = 4.0 - 2.0 * np.log10(positions + 1.0)  # 4 - 2 log10(p + 1): still > 0 at 3x, ~0 at p = 99, < 0 beyond
    assert predict.window(fading, digits).min() > 0
    assert predict.predicted_rung(fading, digits) == 0  # extrapolated below 0 at 100 digits
    assert predict.predicted_rung(3.5 - np.log10(positions + 1.0), digits) == 1_000  # 0.5 at 1,000, -0.5 at 10,000
    wrong_early = flat.copy()
    wrong_early[25] = -1.0  # already wrong within the horizon
    assert predict.predicted_rung(wrong_early, digits) == 0
    wrong_late = flat.copy()
    wrong_late[31:] = -1.0  # beyond 3x: the predictor must not see it
    assert predict.predicted_rung(wrong_late, digits) == 10_000


def test_agreement_counts_the_right_rung_and_ranks():
    found = predict.agreement(pd.Series([0, 100, 10_000, 10_000]), pd.Series([0, 1_000, 10_000, 0]))
    assert found["right"] == 0.5 and found["n"] == 4
    assert found["confusion"].loc[1_000, 100] == 1 and found["confusion"].loc[0, 10_000] == 1
    assert found["confusion"].to_numpy().sum() == 4


def test_the_error_rate_model_compounds_a_rate_over_each_rung():
    digits, positions = 10, 10 * 10 + 1
    median = np.full(positions, 5.0)
    assert predict.predicted_rung_by_error_rate(median - 1.0, median, digits) == 10_000  # sd ~ 0.4: no errors
    # sd ~ 2: p = P(N(5, 2) < 0) ~ 0.0062 per position: a 100-digit chain is right with ~0.54 < 0.99
    assert predict.predicted_rung_by_error_rate(median - 5.0, median, digits) == 0
    # sd = 1.25: p = P(N(5, 1.25) < 0) ~ 3.2e-5: 100 digits ~0.997 pass, 1,000 ~0.969 fail
    from scipy.stats import norm

    spread = 1.25 * -norm.ppf((1 - 0.375) / (64 + 0.25))  # median - worst of 64 normals with sd 1.25
    assert predict.predicted_rung_by_error_rate(median - spread, median, digits) == 100


def test_the_fade_position_is_where_the_probe_first_loses_half_the_chains():
    assert predict.fade_position([1.0, 1.0, 0.9, 0.5, 1.0]) == 4  # entry i is position i + 1
    assert predict.fade_position([1.0, 0.7]) == 3  # never: censored at the length + 1


def test_an_adder_failing_carry_chains_at_its_trained_length_is_predicted_to_fail_the_first_rung():
    digits, flat = 10, list(np.full(101, 5.0))
    frame = pd.DataFrame({"experiment": "e", "trial_id": ["a", "b"], "digits": digits, "cell": "RNN", "layers": 1,
                          "lr": 0.01, "seed": 0, "chains": 64, "chain_worst_profile": [flat, flat],
                          "chain_median_profile": [flat, flat], predict.GATE: [1.0, 0.5],
                          **{f"probe_carry_chain_{n}": 1.0 for n in (100, 1_000, 10_000)}})
    gated = predict.predictions(frame)
    assert gated["predicted"].tolist() == gated["predicted_by_rate"].tolist() == [10_000, 0]
    assert predict.predictions(frame, gate=False)["predicted"].tolist() == [10_000, 10_000]


@pytest.mark.ray  # reads the session's real quick sweep (tests/conftest.py)
def test_a_sweeps_own_checkpoints_are_the_adders_and_a_retrain_here_matches_its_history(quick_sweep, tmp_path):
    """On a sweep's own folder (Tune's trial folders kept) the final checkpoint is the adder itself: its probe
    ladder, measured again, equals the one the sweep recorded, number for number. With --retrain the same adder
    is trained again from its config and seed, and on the machine and code that trained it every evaluation equals
    the recorded history."""
    from tune_adder.metrics import PROBE_COLUMNS

    experiment = quick_sweep["experiment"]
    saved = tmp_path / "weights"
    for flags, weights in (([], "checkpoint"), (["--retrain", "--weights", str(saved)], "retrained")):
        out = tmp_path / f"{weights}.parquet"
        assert retrain.main([str(experiment), "--digits", "5", "--limit", "2", "--out", str(out), *flags]) == 0
        rows = pd.read_parquet(out)
        assert len(rows) == 2 and set(rows["weights"]) == {weights} and rows["retrain_matched"].all(), rows.filter(like="retrain")
        assert set(rows["cpu"]) == {retrain.cpu_model()} and retrain.cpu_model() != "unknown"
        for column in PROBE_COLUMNS[:-2]:  # NaN above a failed rung in both
            pd.testing.assert_series_equal(rows[f"retrained_{column}"].astype(float), rows[column].astype(float),
                                           check_names=False, obj=f"{weights} {column}")  # fmt: skip
    # --weights kept each retrained adder's final weights: tensor for tensor the sweep's own final checkpoint
    for _, row in rows.iterrows():
        kept = torch.load(saved / experiment.name / f"{row['trial_id']}.pt", weights_only=True)
        sweep = retrain.saved_final_state(experiment, row["trial_id"], int(row["steps_trained"]))["model"]
        assert kept["config"]["seed"] == row["seed"] and kept["config"]["steps"] == row["steps_trained"]
        assert kept["model"].keys() == sweep.keys()
        assert all(torch.equal(kept["model"][k], sweep[k]) for k in sweep)


def test_shards_split_the_adders_once_and_keep_their_share_as_work_is_done():
    from pathlib import Path

    work = [(Path("e"), {}, {"trial_id": f"t{i}"}) for i in range(7)]
    shards = [retrain.select(work, set(), (k, 3)) for k in range(3)]
    ids = lambda part: [w[2]["trial_id"] for w in part]  # noqa: E731
    assert sorted(sum(map(ids, shards), [])) == sorted(ids(work)) and ids(shards[1]) == ["t1", "t4"]
    # t0 and t1 done (by any job): shard 1 keeps its own t4, nothing moves between shards
    assert ids(retrain.select(work, {("e", "t0"), ("e", "t1")}, (1, 3))) == ["t4"]
    assert ids(retrain.select(work, {("e", "t0")})) == [f"t{i}" for i in range(1, 7)]


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_a_bad_shard_is_one_line_naming_it_and_exit_2(text, capsys):
    with pytest.raises(SystemExit) as exit_:
        retrain.main(["data/full-seeds3", "--out", "/nonexistent/x.parquet", f"--shard={text}"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "--shard" in err and repr(text) in err and "0 <= K < N" in err


def test_merge_keeps_the_first_files_rows_in_order_and_adds_only_new_adders(tmp_path):
    from analysis import mechanism_merge

    first = pd.DataFrame({"experiment": "e", "trial_id": ["b", "a"], "value": [1, 2]})
    shard = pd.DataFrame({"experiment": ["e", "e", "f"], "trial_id": ["a", "c", "a"], "value": [9, 3, 4]})
    out = tmp_path / "margins.parquet"
    first.to_parquet(out)
    shard.to_parquet(tmp_path / "shard.parquet")
    assert mechanism_merge.main([str(out), str(tmp_path / "shard.parquet")]) == 0
    merged = pd.read_parquet(out)
    assert list(zip(merged.experiment, merged.trial_id, merged.value)) == [("e", "b", 1), ("e", "a", 2), ("e", "c", 3), ("f", "a", 4)]
    assert mechanism_merge.main([str(out), str(tmp_path / "missing.parquet")]) == 2
    assert pd.read_parquet(out).equals(merged) and sorted(p.name for p in tmp_path.iterdir()) == ["margins.parquet", "shard.parquet"]


def test_the_forest_never_fits_on_a_seed_of_the_config_it_predicts():
    """Seeds of one config share a fingerprint and, here, a rung that nothing else explains: a forest that saw a
    sibling seed would read the rung off the fingerprint (ungrouped folds score ~100 %); kept out of its config's
    fold it is at chance. A real signal (the margin's level) is still learned across configs."""
    rng = np.random.default_rng(0)
    configs, seeds = 40, 5
    fingerprint = np.repeat(rng.normal(size=(configs, 4)), seeds, axis=0) + rng.normal(scale=0.01, size=(configs * seeds, 4))
    rung = np.repeat(rng.choice([0, 100, 1_000, 10_000], size=configs), seeds)
    groups = np.repeat(np.arange(configs), seeds)
    features = pd.DataFrame(fingerprint, columns=list("abcd"))
    assert (predict.out_of_fold(features, rung, groups) == rung).mean() < 0.5
    level = rng.normal(size=configs * seeds)
    signal = np.where(level > 0, 10_000, 0)
    assert (predict.out_of_fold(features.assign(level=level), signal, groups) == signal).mean() > 0.9


def test_the_held_out_forest_never_sees_the_rows_it_predicts():
    """fresh_rows fits on the rows before `designed_on` only. The 30 earlier rows teach flat margin -> top rung,
    decaying -> fails; the 10 later ones hold a pattern of their own (flat at -3) that a forest fitted on them would
    learn from their labels. Their predictions must not move when those labels are turned upside down."""
    def row(i: int, profile: list, rung: float) -> dict:
        return {"experiment": "e", "trial_id": f"t{i}", "digits": 10, "cell": "RNN", "layers": 1 + i % 3, "lr": 0.01,
                "seed": i, "chains": 64, "chain_worst_profile": profile, "chain_median_profile": [p + 1 for p in profile],
                "uniform_worst_profile": profile, "uniform_median_profile": profile,
                "chain_first_wrong": [float("nan")] * 64, "chain_trained_min_margin": profile[0],
                "retrained_final_carry_chain_exact_match": 1.0,
                **{f"{prefix}probe_carry_chain_{n}": rung for n in (100, 1_000, 10_000) for prefix in ("", "retrained_")}}

    flat, decaying, own = [5.0] * 100, [5.0 - 0.2 * p for p in range(100)], [-3.0] * 100
    seen = [row(i, flat, 1.0) if i % 2 == 0 else row(i, decaying, 0.0) for i in range(30)]
    predicted = {}
    for label in (1.0, 0.0):
        frame = pd.DataFrame(seen + [row(i, own, label) for i in range(30, 40)])
        found = predict.fresh_rows(frame, designed_on=30)
        assert len(found) == 10 and found["retrained"].eq(10_000 if label else 0).all()
        predicted[label] = found["predicted_by_forest"].tolist()
    assert predicted[1.0] == predicted[0.0]
    taught = pd.DataFrame(seen + [row(30, flat, 0.0), row(31, decaying, 1.0)])  # labelled against what was taught
    assert predict.fresh_rows(taught, designed_on=30)["predicted_by_forest"].tolist() == [10_000, 0]
    assert predict.fresh_rows(taught, designed_on=32).empty


def test_carry_by_depth_reads_each_layer_bottom_first_and_counts_a_fading_top():
    rows = [{"digits": 10, "layers": 3, "carry_l1_h_chain_acc_beyond": 0.9, "carry_l2_h_chain_acc_beyond": 0.7,
             "carry_l3_h_chain_acc_beyond": top, **{f"probe_carry_chain_{n}": 0.0 for n in (100, 1_000, 10_000)}}
            for top in (0.5, 0.6)]
    rows.append({"digits": 10, "layers": 1, "carry_l1_h_chain_acc_beyond": 1.0,
                 **{f"probe_carry_chain_{n}": 1.0 for n in (100, 1_000, 10_000)}})
    table = predict.carry_by_depth(pd.DataFrame(rows))
    assert table.to_dict("records") == [{"digits": 10, "layers": 3, "reaches_10000": False, "adders": 2,
                                         "acc_by_layer": "0.90 / 0.70 / 0.55", "top_below_bottom": 1.0}]


def test_the_window_features_see_nothing_beyond_the_horizon():
    digits, n = 10, 101
    row = pd.Series({"digits": digits, "chain_worst_profile": np.full(n, 5.0), "chain_median_profile": np.full(n, 8.0),
                     "uniform_worst_profile": np.full(n, 6.0), "uniform_median_profile": np.full(n, 9.0),
                     "chain_first_wrong": np.full(64, np.nan), "chain_trained_min_margin": 5.0, predict.GATE: 1.0,
                     "carry_l1_h_chain_acc_profile": np.ones(n - 1)})
    flat = predict.window_features(row)
    assert flat["worst_min"] == 5.0 and flat["spread"] == 3.0 and flat["worst_slope"] == pytest.approx(0.0, abs=1e-9)
    late = row.copy()
    late["chain_worst_profile"] = np.r_[np.full(31, 5.0), np.full(n - 31, -3.0)]  # wrong only beyond 3x
    late["chain_first_wrong"] = np.full(64, 31.0)
    late["carry_l1_h_chain_acc_profile"] = np.r_[np.ones(30), np.zeros(n - 31)]
    assert predict.window_features(late) == flat
    early = row.copy()
    early["chain_worst_profile"] = np.r_[np.full(25, 5.0), np.full(n - 25, -3.0)]  # wrong from position 25, inside
    found = predict.window_features(early)
    assert found["worst_min"] == -3.0 and found["worst_slope"] < 0


def test_the_retest_compares_the_first_rung_only_where_the_margin_chains_have_its_length():
    frame = pd.DataFrame({"chain_length": [100.0, 100.0, 200.0], "chain_exact_match": [1.0, 0.98, 1.0],
                          "retrained_probe_carry_chain_100": [0.995, 1.0, 0.5]})
    assert predict.retest_agreement(frame) == (2, 0.5)
    assert predict.retest_agreement(frame.iloc[2:])[0] == 0
