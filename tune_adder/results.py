"""Load a sweep's trials from Ray's experiment folder and write the history/trials frames beside it.

The one place that reads Ray's on-disk results; everything downstream reads the parquet frames.
"""

from __future__ import annotations

import math

import pandas as pd
from ray import tune

from tune_adder.frames import TrialRecord, history_frame, trials_frame
from tune_adder.storage import Storage

HISTORY_FILE = "history.parquet"
TRIALS_FILE = "trials.parquet"


def _clean(value):
    """NaN in Ray's frame means 'not reported'; the frames want None there."""
    return None if isinstance(value, float) and math.isnan(value) else value


def load_records(storage: Storage, name: str) -> list[TrialRecord]:
    """Every trial of experiment `name` with its config, status and every report, in trial-id order."""
    analysis = tune.ExperimentAnalysis(storage.path(name), storage_filesystem=storage.fs)
    frames = analysis.trial_dataframes
    records = []
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        df = frames.get(trial.trial_id, pd.DataFrame())
        reports = [{k: _clean(v) for k, v in row.items()} for row in df.to_dict("records")]
        records.append(TrialRecord(trial.trial_id, dict(trial.config), str(trial.status), reports))
    return records


def write_frames(storage: Storage, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build both frames from Ray's results and write them atomically into the experiment folder."""
    records = load_records(storage, name)
    history, trials = history_frame(records), trials_frame(records)
    storage.write_parquet(storage.path(name, HISTORY_FILE), history)
    storage.write_parquet(storage.path(name, TRIALS_FILE), trials)
    return history, trials
