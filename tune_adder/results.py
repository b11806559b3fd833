"""Load a sweep's trials from Ray's experiment folder and write the history/trials frames beside it.

The one place that reads Ray's on-disk results; everything downstream reads the parquet frames.
"""

from __future__ import annotations

import json
import time

import pandas as pd
from ray import tune

from tune_adder.frames import HISTORY_FILE, TRIALS_FILE, TrialRecord, history_frame, trials_frame
from tune_adder.storage import Storage

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


class LiveFrames(tune.Callback):
    """Rewrites both frames every `every` seconds while the sweep runs, so a running experiment can be analysed.

    Reports are kept in memory as Tune delivers them (seeded from Ray's files when a sweep resumes), so each
    write costs one pass over the reports and no reading; trials not yet ended have stop_reason `running`.
    The driver's final `write_frames` from Ray's own files replaces them at the end.
    """

    def __init__(self, storage: Storage, name: str, every: float) -> None:
        self.storage, self.name, self.every = storage, name, every
        self.records: dict[str, TrialRecord] = {}
        self.last = time.monotonic()

    def setup(self, **info) -> None:
        # Tuner.restore unpickles this callback from the first session: what earlier sessions reported is read back.
        self.last = time.monotonic()
        try:
            self.records = {r.trial_id: r for r in load_records(self.storage, self.name)}
        except ValueError:  # a new experiment: Tune has saved no state yet
            self.records = {}

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self._record(trial).reports.append(dict(result))

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        for trial in trials:
            self._record(trial).status = str(trial.status)
        records = sorted(self.records.values(), key=lambda r: r.trial_id)
        self.storage.write_parquet(self.storage.path(self.name, HISTORY_FILE), history_frame(records))
        self.storage.write_parquet(self.storage.path(self.name, TRIALS_FILE), trials_frame(records))

    def _record(self, trial) -> TrialRecord:
        if trial.trial_id not in self.records:
            self.records[trial.trial_id] = TrialRecord(trial.trial_id, dict(trial.config), str(trial.status))
        return self.records[trial.trial_id]
