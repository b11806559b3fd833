"""Load a sweep's trials from Ray's experiment folder and write the history/trials frames beside it.

The one place that reads Ray's on-disk results; everything downstream reads the parquet frames.
"""

from __future__ import annotations

import json

import pandas as pd
from ray import tune

from tune_adder.frames import TrialRecord, history_frame, trials_frame
from tune_adder.storage import Storage

HISTORY_FILE = "history.parquet"
TRIALS_FILE = "trials.parquet"
RESULT_FILE = "result.json"  # Ray writes one JSON line per report into each trial folder


def _read_reports(storage: Storage, trial_path: str) -> list[dict]:
    """The trial's result.json rows; a line cut short by a killed driver is skipped, not fatal."""
    path = f"{trial_path}/{RESULT_FILE}"
    if not storage.exists(path):
        return []
    reports = []
    for line in storage.read_bytes(path).decode("utf-8", errors="replace").splitlines():
        try:
            reports.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return reports


def load_records(storage: Storage, name: str) -> list[TrialRecord]:
    """Every trial of experiment `name` with its config, status and every report, in trial-id order."""
    analysis = tune.ExperimentAnalysis(storage.path(name), storage_filesystem=storage.fs)
    return [
        TrialRecord(t.trial_id, dict(t.config), str(t.status), _read_reports(storage, t.storage.trial_fs_path))
        for t in sorted(analysis.trials, key=lambda t: t.trial_id)
    ]


def write_frames(storage: Storage, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build both frames from Ray's results and write them atomically into the experiment folder."""
    records = load_records(storage, name)
    history, trials = history_frame(records), trials_frame(records)
    storage.write_parquet(storage.path(name, HISTORY_FILE), history)
    storage.write_parquet(storage.path(name, TRIALS_FILE), trials)
    return history, trials
