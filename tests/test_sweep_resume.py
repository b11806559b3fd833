"""Sweeps that stop and go on: a driver killed with kill -9 (grid and Optuna) or a worker killed mid-trial resumes
without rerunning or repeating; trials that fail for real exit nonzero with one line each and a rerun retries them
from their checkpoints; solved and diverging trials end early and the sweep goes on. Split from test_sweep.py so
the suite's parallel lanes (pytest-xdist, one file per lane) balance."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import REPO
from tests.test_sweep import (
    TINY, assert_full_histories, cli, frames, held_at, hook_env, only_experiment, raw_reports, release_and_end,
    start_sweep, sweep, wait_for,
)
from tune_adder import spaces
from tune_adder.testhooks import BLOCK_AT, DIVERGE_AT, FAIL_AT, NO_PROBES

@pytest.mark.parametrize("search", ["grid", "optuna"])
def test_killed_driver_resumes_without_rerunning_or_repeating(search, tmp_path, ray_address):
    """kill -9 the driver with one trial finished and two caught at step 30 (the test hook holds each trial right
    after that report; their last checkpoint is at 20). The rerun keeps the finished trial as it is, continues the
    two from their checkpoints (their first new report is step 30, not 10), runs the rest and starts no trial twice:
    the quick grid's 8 configs, or exactly Optuna's 3 samples. The grid's rerun leaves out --address: it resumes on
    an embedded Ray of its own (a changed --address applies to a rerun, README)."""
    space = ["--grid", "quick"] if search == "grid" else ["--search", "optuna", "--num-samples", "3", "--digits", "3"]
    args = [*space, "--max-steps", "40", "--eval-every", "10", "--checkpoint-every", "2"]
    n = len(spaces.get_grid("quick").configs) if search == "grid" else 3
    gate, storage = tmp_path / "gate", tmp_path / "results"
    gate.mkdir()
    proc = start_sweep(args, storage, ray_address, env={BLOCK_AT: f"30:{gate}"})
    try:
        # Events, not timers: both trials the 2-CPU cluster runs are held at step 30; one is let go to its end,
        # and the trial that takes its place is held at step 30 in turn.
        first = held_at(proc, storage, gate, 30, "two trials held at step 30")
        assert proc.poll() is None
        done, pid = sorted(first.items())[0]
        (gate / f"{pid}.release").touch()
        wait_for(lambda: proc.poll() is not None or any(r["stop_reason"] == "completed" for r in raw_reports(done)), 300,
                 "the released trial to finish")  # fmt: skip
        held = held_at(proc, storage, gate, 30, "the next trial held at step 30")
        assert proc.poll() is None and done not in held
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        exp = only_experiment(storage)
        # Ray's raw reports and the checkpoints on disk, per trial, at the kill. The held trials' processes cannot
        # report again: their hook holds them until Ray ends them with their driver.
        before = {d: raw_reports(d) for d in exp.glob("train_*")}
        checkpoints = {d: {json.loads(m.read_text())["metrics"]["step"] for m in d.glob("checkpoint_*/meta.json")}
                       for d in before}  # fmt: skip
        assert set(held) <= set(before) and all(checkpoints[d] == {20} for d in held), checkpoints
        # The grid's rerun changes --address (README: it may differ): it resumes on an embedded Ray of its own.
        out = sweep(args, storage, ray_address if search == "optuna" else None)
    finally:
        release_and_end(proc, gate)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming" in out.stdout
    assert "Failed to fetch metrics" not in out.stdout + out.stderr, out.stderr[-3000:]  # Tune's noise on resume, silenced
    history, trials = frames(exp)
    assert len(trials) == n and len(list(exp.glob("train_*"))) == n  # no trial started twice, no sample added
    assert set(trials["stop_reason"]) == {"completed"}
    assert_full_histories(history, 10, 40)  # nothing lost, nothing repeated
    # The finished trial trained no further: at most its final report is repeated.
    assert all(r["step"] == 40 for r in raw_reports(done)[len(before[done]) :]), raw_reports(done)
    for d in held:  # the held trials continued from their checkpoints at step 20, in new processes
        old_pids = {r["pid"] for r in before[d]}
        after = [r for r in raw_reports(d) if r["pid"] not in old_pids]
        assert [r["step"] for r in after] == [30, 40, 40], (d.name, [(r["pid"], r["step"]) for r in raw_reports(d)])
        moved = {r["node_id"] for r in after}.isdisjoint(r["node_id"] for r in before[d])
        assert moved is (search == "grid"), (d.name, search)  # the rerun's --address took effect, or stayed
    settings = json.loads((exp / "experiment.json").read_text())
    assert settings["status"] == "completed" and [s["resumed"] for s in settings["sessions"]] == [False, True]
    if search == "optuna":  # the searcher resumed too: its study holds the 3 samples, each told its result once
        assert (trials["digits"] == 3).all() and trials["lr"].nunique() == 3
        study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'optuna.db'}")
        assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 3


def test_optuna_study_in_sqlite_and_a_killed_worker_resumes_from_its_checkpoint(tmp_path, ray_address):
    """Event-driven: trials block right after their step-40 report (checkpointed) until the test releases them,
    so the process killed is certainly a trial's, caught at a known step once the driver has its report."""
    args = ["--search", "optuna", "--num-samples", "2", "--digits", "3", "--max-steps", "60", "--eval-every", "10",
            "--checkpoint-every", "2"]  # fmt: skip
    gate = tmp_path / "gate"
    gate.mkdir()
    storage = tmp_path / "results"
    cmd = [sys.executable, "-m", "tune_adder.sweep", *args, *TINY, "--storage", str(storage), "--address", ray_address]
    env = hook_env({BLOCK_AT: f"40:{gate}"}, probes=False)
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        marker = wait_for(lambda: next(iter(sorted(gate.glob("*.blocked"))), None) or proc.poll() is not None, 300,
                          "a blocked trial")
        assert proc.poll() is None
        pid = int(marker.read_text())

        def reported_40():  # the driver has taken the step-40 report (and its checkpoint) from that process
            found = [d for d in storage.glob("*/train_adder_*") if raw_reports(d) and raw_reports(d)[-1]["pid"] == pid]
            return found[0] if found and raw_reports(found[0])[-1]["step"] == 40 else None

        trial_dir = wait_for(reported_40, 120, "the driver to record the blocked trial's step 40")
        os.kill(pid, signal.SIGKILL)  # the trial's worker process, blocked at step 40
        (gate / "release").touch()
        assert proc.wait(timeout=300) == 0
    finally:
        release_and_end(proc, gate)
    reports = raw_reports(trial_dir)
    first_after = next(r for r in reports if r["pid"] != pid)
    assert first_after["step"] == 50  # resumed from the checkpoint at step 40, not from scratch
    exp = only_experiment(storage)
    history, trials = frames(exp)
    assert trials["stop_reason"].tolist() == ["completed"] * 2
    assert_full_histories(history, 10, 60)
    assert (trials["digits"] == 3).all() and trials["lr"].between(1e-4, 0.3).all() and trials["lr"].nunique() == 2
    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'optuna.db'}")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 2


def test_failed_trials_exit_nonzero_one_line_each_and_a_rerun_retries_them(tmp_path, ray_address, capsys):
    """Half the quick grid fails for real (test hook, every attempt): exit 1, status partial, one honest line
    per failure with its error file; a rerun without the hook continues the failed trials from their checkpoints."""
    args = ["--grid", "quick", "--max-steps", "40", "--eval-every", "10", "--checkpoint-every", "1",
            "--max-failures", "1", "--quiet", "--name", "fails"]  # fmt: skip
    out = sweep(args, tmp_path, ray_address, env={FAIL_AT: "20:lr=0.03"})
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    said = [line for line in out.stderr.splitlines() if line.startswith("test hooks set (")]  # a stray export is not silent
    assert len(said) == 1 and f"{FAIL_AT}=20:lr=0.03" in said[0] and f"{NO_PROBES}=1" in said[0], out.stderr[-3000:]
    exp = tmp_path / "fails"
    record = json.loads((exp / "experiment.json").read_text())
    assert record["status"] == "partial"
    history, trials = frames(exp)
    failed = trials[trials["lr"] == 0.03]
    assert set(failed["stop_reason"]) == {"error"} and set(failed["status"]) == {"ERROR"} and len(failed) == 4
    assert set(trials.loc[trials["lr"] != 0.03, "stop_reason"]) == {"completed"}
    retried = [line for line in out.stdout.splitlines() if "retrying" in line]
    gave_up = [line for line in out.stdout.splitlines() if "failed for good" in line]
    assert len(retried) == 4 and len(gave_up) == 4, out.stdout
    for line in retried:
        assert "retry 1 of 1" in line and "from its last checkpoint" in line, line
    for line in gave_up:
        assert "no retries left" in line, line
        log = Path(line.rsplit("error log: ", 1)[1])
        assert log.is_file() and "InjectedFailure" in log.read_text(), line
    # The summary says the sweep is not done and how to retry.
    assert "4 trials failed" in out.stdout and "rerun the same command" in out.stdout
    checkpointed = {t: len(raw_reports(d)) for t in failed["trial_id"] for d in exp.glob(f"train_adder_{t}_*")}
    stamp = (exp / "experiment.json").read_bytes()
    other = [*args[:2], "--max-steps", "50", *args[4:], *TINY, "--storage", str(tmp_path), "--address", ray_address]
    code, _, err = cli(other, capsys)  # other settings, refused before Ray is joined
    assert code == 2 and "--max-steps 40 there, 50 now" in err, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and (exp / "experiment.json").read_bytes() == stamp

    # The rerun drops --quiet: flags a rerun may change apply to it, not the first run's (Tune restores those).
    again = sweep([a for a in args if a != "--quiet"] + ["--status-every", "0.2"], tmp_path, ray_address)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "resuming" in again.stdout and "already complete" not in again.stdout
    assert FAIL_AT not in again.stderr, again.stderr[-3000:]  # unset for the rerun
    assert "Failed to fetch metrics" not in again.stdout + again.stderr, again.stderr[-3000:]
    assert "[fails " in again.stdout and " of 8 trials ended" in again.stdout, again.stdout[-2000:]
    record = json.loads((exp / "experiment.json").read_text())
    assert record["status"] == "completed"
    history, trials = frames(exp)
    assert set(trials["stop_reason"]) == {"completed"}
    assert_full_histories(history, 10, 40)
    for trial_id, seen in checkpointed.items():  # retried from the checkpoint at step 30, not from step 0
        (trial_dir,) = exp.glob(f"train_adder_{trial_id}_*")
        assert [r["step"] for r in raw_reports(trial_dir)[seen:]] == [40, 40], trial_id


def test_stop_when_solved_and_a_diverging_trial_end_early_and_the_sweep_goes_on(tmp_path, ray_address):
    """--stop-when-solved ends solved trials before their budget; the lr 0.003 trials diverge for real after step 20
    (the test hook sets their weights to NaN, the trainer's own check sees the non-finite loss at step 40): they end
    `diverged`, not in error, and the others run on to their ends; the sweep completes with exit 0."""
    args = ["--grid", "quick", "--max-steps", "200", "--eval-every", "20", "--stop-when-solved"]
    out = sweep(args, tmp_path, ray_address, env={DIVERGE_AT: "20:lr=0.003"})
    assert out.returncode == 0, out.stderr[-3000:]
    exp = only_experiment(tmp_path)
    assert exp.name.endswith("-solve")
    history, trials = frames(exp)
    solved = trials[trials["stop_reason"] == "solved"]
    assert len(solved) >= 1
    for row in solved.itertuples():
        steps = history[history["trial_id"] == row.trial_id].sort_values("step")
        assert row.steps_trained <= 200 and steps["val_exact_match"].tail(3).eq(1.0).all()
        assert row.steps_to_solve <= row.steps_trained - 2 * 20
    assert (solved["steps_trained"] < 200).any()  # solving ends a trial before its budget
    diverged = trials[trials["lr"] == 0.003]
    assert len(diverged) == 4 and set(diverged["stop_reason"]) == {"diverged"} and diverged["diverged"].all()
    assert set(diverged["status"]) == {"TERMINATED"} and (diverged["steps_trained"] == 40).all()
    for trial_id in diverged["trial_id"]:  # finite until the weights went bad, then the step that saw it, and no more
        curve = history[history["trial_id"] == trial_id].sort_values("step")
        assert curve["step"].tolist() == [20, 40] and curve["diverged"].tolist() == [False, True]
        assert math.isfinite(curve["train_loss"].iloc[0]) and not math.isfinite(curve["train_loss"].iloc[1])
    rest = trials[trials["lr"] != 0.003]
    assert set(rest["stop_reason"]) <= {"solved", "completed"} and not rest["diverged"].any()
    assert json.loads((exp / "experiment.json").read_text())["status"] == "completed"
