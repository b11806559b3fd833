"""The result frames built from trial records: de-duplication, steps_to_solve, stop reasons, atomic writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from tune_adder.frames import TrialRecord, dedupe_reports, ends_solved, history_frame, steps_to_solve, stop_reason, trials_frame
from tune_adder.metrics import EVAL_METRICS, HISTORY_COLUMNS, TRIAL_COLUMNS
from tune_adder.storage import Storage

CONFIG = {"digits": 3, "lr": 0.01, "layers": 1, "cell": "RNN", "hidden": 8, "embed_dim": 4, "batch_size": 8,
          "base": 10, "seed": 0, "max_steps": 40}  # fmt: skip


def _report(step: int, exact: float, reason: str = "running", **extra) -> dict:
    report = {m: 0.5 for m in EVAL_METRICS}
    report.update(step=step, samples_seen=step * 8, val_exact_match=exact, diverged=False, stop_reason=reason)
    report["time_total_s"] = float(step)
    return {**report, **extra}


def test_restored_trial_keeps_the_last_report_of_each_step():
    # Reported 10, 20, 30; crashed; restored from the checkpoint at 20 and reported 30, 40 again.
    reports = [_report(10, 0.1), _report(20, 0.2), _report(30, 0.3), _report(30, 0.35), _report(40, 1.0, "completed")]
    kept = dedupe_reports(reports)
    assert [r["step"] for r in kept] == [10, 20, 30, 40]
    assert kept[2]["val_exact_match"] == 0.35
    history = history_frame([TrialRecord("t0", CONFIG, "TERMINATED", reports)])
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert not history.duplicated(["trial_id", "step"]).any()


def test_steps_to_solve_is_the_first_perfect_evaluation():
    assert steps_to_solve([_report(10, 0.9), _report(20, 1.0), _report(30, 0.99), _report(40, 1.0)]) == 20
    assert steps_to_solve([_report(10, 0.9)]) is None


def test_stop_reasons():
    done = [_report(20, 0.5), _report(40, 0.9, "completed")]
    assert stop_reason("TERMINATED", done, CONFIG) == "completed"
    assert stop_reason("TERMINATED", [_report(20, 0.5)], CONFIG) == "early_stopped"  # cut by the scheduler
    assert stop_reason("TERMINATED", [_report(40, 0.5)], CONFIG) == "completed"  # stopped at max_steps by Ray
    assert stop_reason("ERROR", done, CONFIG) == "error"
    assert stop_reason("RUNNING", [_report(20, 0.5)], CONFIG) == "running"
    assert stop_reason("PENDING", [], CONFIG) == "running"
    assert stop_reason("TERMINATED", [_report(20, float("nan"), diverged=True)], CONFIG) == "diverged"


def _curve(*exact: float) -> list[dict]:
    return [_report(10 * (i + 1), e) for i, e in enumerate(exact)]


def test_a_trial_ends_solved_only_on_three_solved_evaluations_in_a_row():
    """Three solved evaluations that are not consecutive, or a streak broken by an unsolved one, are not solved."""
    assert not ends_solved(_curve(1, 1, 0, 1, 1))  # four solved, never three in a row
    assert ends_solved(_curve(1, 1, 0, 1, 1, 1))
    assert ends_solved(_curve(0, 1, 1, 1))
    assert not ends_solved(_curve(1, 1, 1, 0))  # the streak must reach the last evaluation
    assert not ends_solved(_curve(1, 1)) and not ends_solved([])
    assert not ends_solved(_curve(1, 0.999, 1))  # solved means exact match 1.0
    # Ray stopped the trial before its final report: the streak tells a solved trial from one the scheduler cut.
    config = {**CONFIG, "stop_when_solved": True, "max_steps": 100}
    assert stop_reason("TERMINATED", _curve(1, 1, 0, 1, 1), config) == "early_stopped"
    assert stop_reason("TERMINATED", _curve(1, 1, 0, 1, 1, 1), config) == "solved"

def test_trials_frame_one_row_per_trial(tmp_path):
    records = [
        TrialRecord("a", CONFIG, "TERMINATED", [_report(20, 1.0), _report(40, 1.0, "completed")]),
        TrialRecord("b", {**CONFIG, "lr": 0.1}, "TERMINATED", [_report(20, 0.2)]),
        TrialRecord("c", {**CONFIG, "seed": 1}, "ERROR", []),
    ]
    trials = trials_frame(records)
    assert list(trials.columns) == list(TRIAL_COLUMNS)
    assert trials["stop_reason"].tolist() == ["completed", "early_stopped", "error"]
    assert trials["steps_to_solve"].tolist() == [20, pd.NA, pd.NA]
    assert trials["steps_trained"].tolist() == [40, 20, 0]
    # Written atomically and read back unchanged; no temporary file is left behind.
    storage = Storage.from_arg(str(tmp_path))
    storage.write_parquet(storage.path("exp", "trials.parquet"), trials)
    pd.testing.assert_frame_equal(storage.read_parquet(storage.path("exp", "trials.parquet")), trials)
    assert [p.name for p in (tmp_path / "exp").iterdir()] == ["trials.parquet"]


WRITER = """
import io, itertools, sys
import numpy as np, pandas as pd
from tune_adder.storage import Storage
storage, path = Storage.from_arg(sys.argv[1]), sys.argv[1] + "/trials.parquet"
blobs = []
for version in (1, 2):  # two large frames (~80 MB each), serialised up front: the loop below only writes
    buf = io.BytesIO()
    pd.DataFrame({"version": version, "x": np.random.default_rng(version).random(ROWS)}).to_parquet(buf, index=False)
    blobs.append(buf.getvalue())
for n in itertools.count():
    print("writing", n, flush=True)
    storage.write_bytes(path, blobs[n % 2])
""".replace("ROWS", "10_000_000")


def test_a_writer_killed_mid_write_leaves_a_whole_frame(tmp_path):
    """A real process killed while it rewrites a large frame back to back: what is read back is one whole copy."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=repo, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        while proc.stdout.readline().split() != ["writing", "3"]:  # two whole copies written, a third under way
            assert proc.poll() is None
        time.sleep(0.2)  # the writer does nothing but write: it is killed inside a write
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    frame = pd.read_parquet(tmp_path / "trials.parquet")
    assert len(frame) == 10_000_000 and frame["version"].nunique() == 1
