"""Replay (--replay DATASET): a finished sweep's recorded evaluations served to the real Ray Tune searchers and
schedulers instead of training. A FIFO replay's frames are the dataset's rows; ASHA cuts trials on the recorded
curves; Optuna searches only recorded values; a dataset that cannot serve the sweep is refused before Ray starts."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from tests.test_sweep import frames, sweep
from tune_adder.metrics import CONFIG_COLUMNS, EVAL_METRICS, PROBE_COLUMNS, PROBE_LADDER
from tests.analysis_frames import grid, write_experiment
from tests.conftest import free_ports
from tune_adder.replay import Recording, ReplayError, solved_prefix
from tune_adder.sweep import main, parse_settings

RECORD = ["--grid", "quick", "--seeds", "2", "--max-steps", "60", "--eval-every", "20"]  # as tests/conftest.py QUICK_SWEEP
SETTING = [c for c in CONFIG_COLUMNS if c not in ("seed", "max_steps")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, quick_sweep):
    """The session's real quick sweep (2 seeds, 60 steps; tests/conftest.py), its frames copied out without Ray's
    folders (as a committed dataset is)."""
    assert quick_sweep["out"].returncode == 0, quick_sweep["out"].stderr[-3000:]
    data = tmp_path_factory.mktemp("data") / "quick-seeds2"
    data.mkdir()
    for name in ("history.parquet", "trials.parquet", "experiment.json"):
        shutil.copy(quick_sweep["experiment"] / name, data / name)
    return data


def by_setting_and_seed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="trial_id").sort_values([*SETTING, "seed", *(["step"] if "step" in frame else [])]).reset_index(drop=True)


def test_a_fifo_replay_writes_the_datasets_rows(dataset, tmp_path, ray_address):
    out = sweep([*RECORD, "--replay", str(dataset)], tmp_path, ray_address)
    assert out.returncode == 0, out.stderr[-3000:]
    exp = tmp_path / "replay-quick-fifo-seeds2-steps60"
    history, trials = frames(exp)
    recorded_h, recorded_t = pd.read_parquet(dataset / "history.parquet"), pd.read_parquet(dataset / "trials.parquet")
    pd.testing.assert_frame_equal(by_setting_and_seed(history), by_setting_and_seed(recorded_h), check_dtype=False)
    keep = [c for c in recorded_t.columns if c not in ("trial_id", "status")]
    pd.testing.assert_frame_equal(by_setting_and_seed(trials[keep + ["trial_id"]]), by_setting_and_seed(recorded_t[keep + ["trial_id"]]),
                                  check_dtype=False)
    record = json.loads((exp / "experiment.json").read_text())
    recorded = json.loads((dataset / "experiment.json").read_text())["command"]
    assert record["replay"] == str(dataset.resolve()) and record["replay_of"] == recorded and "--grid quick" in recorded
    assert record["status"] == "completed"


def test_an_asha_replay_cuts_trials_on_the_recorded_curves(dataset, tmp_path, ray_address):
    args = [*RECORD, "--scheduler", "asha", "--grace-period", "20", "--reduction-factor", "2"]
    out = sweep([*args, "--replay", str(dataset)], tmp_path, ray_address)
    assert out.returncode == 0, out.stderr[-3000:]
    history, trials = frames(tmp_path / "replay-quick-asha-seeds2-steps60")
    assert len(trials) == 16 and (trials["stop_reason"] == "early_stopped").any()
    recorded = pd.read_parquet(dataset / "history.parquet")
    for row in trials.itertuples():  # each trial serves its own seed's recording; every served step is recorded
        served = history[history["trial_id"] == row.trial_id]
        match = recorded.merge(pd.DataFrame([{**{c: getattr(row, c) for c in SETTING}, "seed": row.seed}]))
        values = [m for m in EVAL_METRICS if m != "step"]
        own = match.set_index("step").loc[served["step"], values].reset_index(drop=True)
        pd.testing.assert_frame_equal(served[values].reset_index(drop=True), own, check_dtype=False)
    assert trials.loc[trials["stop_reason"] == "early_stopped", list(PROBE_COLUMNS[:2])].isna().all().all()


def test_an_optuna_replay_searches_only_recorded_values(dataset, tmp_path, ray_address):
    args = ["--search", "optuna", "--digits", "5", "--num-samples", "3", "--max-steps", "60", "--eval-every", "20"]
    out = sweep([*args, "--replay", str(dataset)], tmp_path, ray_address)
    assert out.returncode == 0, out.stderr[-3000:]
    _, trials = frames(next(p for p in tmp_path.iterdir() if p.is_dir()))
    recording = Recording.load(dataset)
    assert len(trials) == 3 and (trials["digits"] == 5).all()
    assert all(recording.has(row) for row in trials.to_dict("records"))


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--grid", "seed", "--max-steps", "60", "--eval-every", "20"], "configs are not in the dataset"),
        (["--grid", "quick", "--max-steps", "100"], "--max-steps 100"),
        (["--grid", "quick", "--max-steps", "60", "--eval-every", "10"], "--eval-every 10"),
        (["--grid", "quick", "--max-steps", "60", "--pack", "seeds"], "--pack"),
        (["--search", "optuna", "--digits", "7", "--max-steps", "60", "--eval-every", "20"], "--digits 7"),
    ],
)
def test_a_dataset_that_cannot_serve_the_sweep_exits_2_before_ray(dataset, flags, named, tmp_path, capsys):
    assert main([*flags, "--replay", str(dataset), "--storage", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err, err
    assert not (tmp_path / "out").exists()


def test_a_missing_or_unfinished_dataset_exits_2(dataset, tmp_path, capsys):
    assert main(["--grid", "quick", "--replay", str(tmp_path / "nowhere"), "--storage", str(tmp_path / "out")]) == 2
    assert "no history.parquet or trials.parquet" in capsys.readouterr().err
    partial = tmp_path / "partial"
    shutil.copytree(dataset, partial)
    trials = pd.read_parquet(partial / "trials.parquet")
    trials.loc[0, "stop_reason"] = "running"
    trials.to_parquet(partial / "trials.parquet")
    assert main([*RECORD, "--replay", str(partial), "--storage", str(tmp_path / "out")]) == 2
    assert "did not finish" in capsys.readouterr().err


def test_recording_serves_the_trials_own_seed_only_and_ends_a_shorter_budget_unprobed(dataset):
    recording = Recording.load(dataset)
    config = {"digits": 5, "lr": 0.03, "layers": 2, "cell": "RNN", "hidden": 64, "embed_dim": 32, "batch_size": 200, "base": 10}
    assert recording.seeds(config) == [0, 1]
    assert recording.reports({**config, "seed": 1}) != recording.reports({**config, "seed": 0})
    with pytest.raises(ReplayError, match=r"under seed 2 \(recorded seeds: 0, 1\)"):  # never seed 0's curve as seed 2's
        recording.reports({**config, "seed": 2})
    short = {**config, "seed": 0, "max_steps": 40}
    assert [r["step"] for r in recording.reports(short)] == [20, 40]
    assert recording.final(short) == {"stop_reason": "completed"}
    first_rungs = [c for c in PROBE_COLUMNS if c.endswith(f"_{PROBE_LADDER[0]}")]  # higher rungs: NaN above a failure
    assert {*first_rungs, *PROBE_COLUMNS[-2:]} <= set(recording.final({**config, "seed": 0, "max_steps": 60}))


@pytest.mark.parametrize(
    ("curve", "served"),
    [
        ([1, 1, 0, 1, 1], 5),  # four solved evaluations, never three in a row: all of it
        ([1, 1, 0, 1, 1, 1], 6),
        ([1, 1, 0, 1, 1, 1, 1, 0], 6),  # ends at the third solved one in a row
        ([0, 1, 0, 1, 0, 1, 1, 1, 0], 8),
        ([1, 1, 1], 3),
        ([0.99, 1, 1], 3),
    ],
)
def test_a_replay_that_stops_when_solved_serves_up_to_the_third_solved_evaluation_in_a_row(curve, served):
    reports = [{"step": 10 * (i + 1), "val_exact_match": float(e)} for i, e in enumerate(curve)]
    assert solved_prefix(reports) == reports[:served]


@pytest.fixture(scope="module")
def seeds_3_to_5(tmp_path_factory):
    """A hand-built dataset of the quick grid's 5-digit configs under seeds 3, 4 and 5, except the GRUs at lr 0.03 which
    lack seed 5; evaluated every 50 steps to 600, and without experiment.json (as a dataset from elsewhere may be)."""
    specs = [s for s in grid(lambda c: None, seeds=(3, 4, 5), digits=(5,), lr=(0.003, 0.03), cell=("RNN", "GRU"))
             if not (s["config"]["cell"] == "GRU" and s["config"]["lr"] == 0.03 and s["config"]["seed"] == 5)]
    for spec in specs:
        spec.update(eval_every=50)
        spec["config"]["max_steps"] = 600
    folder = write_experiment(tmp_path_factory.mktemp("data") / "seeds3to5", specs)
    (folder / "experiment.json").unlink()
    return folder


REPLAY_5 = ["--grid", "quick", "--digits", "5", "--eval-every", "50"]
UNSERVABLE = [
    (["--seeds", "5"], "--seeds 5 asks for seeds 0..4 but the dataset recorded seeds 3, 4 for every config"),
    (["--first-seed", "3", "--seeds", "3"], "--first-seed 3 --seeds 3 asks for seeds 3..5 but the dataset recorded seeds 3, 4"),
    (["--first-seed", "4", "--seeds", "2"], "(not 5)"),
    (["--search", "optuna", "--digits", "5", "--max-steps", "600", "--eval-every", "50"], "--search optuna --digits 5 asks for seed 0"),
    (["--grid", "quick", "--digits", "5", "--first-seed", "3", "--eval-every", "10"], "--eval-every 10 differs from the dataset's 50"),
]


@pytest.mark.parametrize(("flags", "named"), UNSERVABLE, ids=[" ".join(f) for f, _ in UNSERVABLE])
def test_a_replay_refuses_seeds_and_evaluations_the_dataset_did_not_record(seeds_3_to_5, flags, named, tmp_path, capsys):
    """Refused in one line, exit 2, before Ray and with nothing written. The --address where nothing listens makes
    a missed check end fast (as an unreachable address) instead of starting a sweep here."""
    argv = [*(flags if "--search" in flags or "--grid" in flags else [*REPLAY_5, *flags]), "--replay", str(seeds_3_to_5)]
    code = main([*argv, "--storage", str(tmp_path / "out"), "--address", f"127.0.0.1:{free_ports(1)[0]}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and named in err, err
    assert not (tmp_path / "out").exists()


def test_a_replay_of_recorded_seeds_from_first_seed_is_accepted(seeds_3_to_5, tmp_path):
    s = parse_settings([*REPLAY_5, "--first-seed", "3", "--seeds", "2", "--replay", str(seeds_3_to_5), "--storage", str(tmp_path)])
    assert s.seed_values() == [3, 4]
    assert Recording.load(seeds_3_to_5).eval_every == 50  # read from the step spacing: no experiment.json here
