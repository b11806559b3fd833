"""Find and load one experiment's result frames (history, trials, settings), validated against metrics.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.stats import SUSTAINED, sustained_solve
from tune_adder.metrics import HISTORY_COLUMNS, PROBE_COLUMNS, STEP, STOP_REASONS, TRIAL_COLUMNS, TRIAL_ID

DEFAULT_STORAGE = Path("results")
HISTORY_FILE = "history.parquet"
TRIALS_FILE = "trials.parquet"
SETTINGS_FILE = "experiment.json"


class InputError(Exception):
    """Bad analysis input; the message is the one line the CLI prints before exiting 2."""


@dataclass
class Experiment:
    path: Path
    history: pd.DataFrame  # HISTORY_COLUMNS, one row per (trial_id, step)
    trials: pd.DataFrame  # TRIAL_COLUMNS, one row per trial
    settings: dict = field(default_factory=dict)  # experiment.json; any key may be missing
    notes: list[str] = field(default_factory=list)  # what loading had to repair, for the report


def latest_experiment(storage: Path = DEFAULT_STORAGE) -> Path:
    """The most recently modified experiment folder (one holding trials.parquet) under `storage`."""
    storage = Path(storage)
    if not storage.is_dir():
        raise InputError(f"no results folder at '{storage}': run a sweep first or pass EXPERIMENT_DIR")
    candidates = [p for p in storage.iterdir() if p.is_dir() and (p / TRIALS_FILE).exists()]
    if not candidates:
        raise InputError(f"no experiment under '{storage}' (no sub-folder holds {TRIALS_FILE}): pass EXPERIMENT_DIR")
    return max(candidates, key=lambda p: (p / TRIALS_FILE).stat().st_mtime)


def _read_frame(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"missing {path.name} in '{path.parent}': not a finished or partial sweep folder")
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise InputError(f"cannot read '{path}' as parquet ({first_line}): the file is corrupt or not parquet") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"'{path}' lacks columns {missing}; tune_adder.metrics expects {list(columns)}")
    if frame.empty:
        raise InputError(f"'{path}' has no rows: the sweep reported nothing yet")
    return frame


def _read_settings(path: Path, notes: list[str]) -> dict:
    if not path.is_file():
        notes.append(f"no {SETTINGS_FILE}: sweep settings unknown")
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        notes.append(f"{SETTINGS_FILE} unreadable ({err}): sweep settings unknown")
        return {}
    return settings if isinstance(settings, dict) else {}


NUMERIC = ("digits", "lr", "layers", "seed", "max_steps")  # config columns the figures sort, match and label
NUMERIC_HISTORY = (STEP, "train_loss", "val_loss", "val_exact_match")


def _check_numeric(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    for column in columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise InputError(f"{name} column {column!r} has type {frame[column].dtype}; expected numbers")


def _normalise(history: pd.DataFrame, trials: pd.DataFrame, notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    _check_numeric(trials, NUMERIC, "trials.parquet")
    _check_numeric(history, NUMERIC + NUMERIC_HISTORY, "history.parquet")
    bad = sorted(set(trials["stop_reason"].dropna()) - set(STOP_REASONS))
    if bad:
        raise InputError(f"trials.parquet stop_reason has {bad}; allowed: {list(STOP_REASONS)}")
    repeated = history.duplicated([TRIAL_ID, STEP], keep="last")
    if repeated.any():
        # The contract says no repeats; a resumed trial can still produce them, and the last report wins.
        notes.append(f"history had {int(repeated.sum())} repeated (trial_id, step) rows; kept the last")
        history = history[~repeated]
    # Cell names are compared case-insensitively and drawn as the seed writes them (RNN, LSTM, GRU).
    history = history.assign(cell=history["cell"].astype(str).str.upper())
    trials = trials.assign(cell=trials["cell"].astype(str).str.upper())
    trials = trials.assign(steps_to_solve=pd.to_numeric(trials["steps_to_solve"], errors="coerce").astype(float))
    history = history.sort_values([TRIAL_ID, STEP], kind="stable").reset_index(drop=True)
    # Solved means what the trainer's --stop-when-solved means: exact match 1.0 at three evaluations in a row.
    sustained = sustained_solve(history).reindex(trials[TRIAL_ID]).to_numpy(dtype=float)
    trials = trials.assign(**{SUSTAINED: np.where(np.isinf(sustained), np.nan, sustained)})
    return history, trials.reset_index(drop=True)


def load_experiment(path: Path) -> Experiment:
    """Load and validate an experiment folder; raise InputError with one line if it is unusable."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not an experiment folder" if path.exists() else "does not exist"
        raise InputError(f"experiment folder '{path}' {what}: give the folder that holds {TRIALS_FILE}")
    notes: list[str] = []
    trials = _read_frame(path / TRIALS_FILE, tuple(c for c in TRIAL_COLUMNS if c not in PROBE_COLUMNS))
    if not set(PROBE_COLUMNS) <= set(trials.columns):
        notes.append("no length-generalisation probes: the sweep predates them")
        trials = trials.assign(**{c: pd.NA for c in PROBE_COLUMNS if c not in trials.columns})
    history = _read_frame(path / HISTORY_FILE, HISTORY_COLUMNS)
    history, trials = _normalise(history, trials, notes)
    running = int((trials["stop_reason"] == "running").sum())
    if running:
        notes.append(f"{running} of {len(trials)} trials still running (stop_reason running): their curves end where they are now")
    return Experiment(path, history, trials, _read_settings(path / SETTINGS_FILE, notes), notes)


RUN_KEY = ["digits", "lr", "layers", "cell", "hidden", "embed_dim", "batch_size", "base", "seed"]  # what makes a run


def load_study(paths: list[Path]) -> Experiment:
    """Several experiment folders read as one study (e.g. data/full-seeds3 and the extra seeds run later with
    --first-seed): the frames concatenated, each run (config and seed) once. A run found in two folders is kept from
    the first folder named and the repeat is noted (a replay's copies, or the same seed trained twice, never count
    twice); trial ids that two folders share are prefixed by the folder's position so their curves stay apart."""
    if len(paths) == 1:
        return load_experiment(paths[0])
    parts = [load_experiment(p) for p in paths]
    notes = [f"{p.path}: {n}" for p in parts for n in p.notes]
    seen: set[tuple] = set()
    used_ids: set[str] = set()
    histories, trial_frames, folders = [], [], []
    for position, part in enumerate(parts):
        keys = [tuple(row) for row in part.trials[RUN_KEY].itertuples(index=False)]
        keep = [k not in seen for k in keys]
        repeats = len(keys) - sum(keep)
        if repeats:
            notes.append(f"{part.path}: {repeats} runs already in an earlier folder (same config and seed) left out")
        trials = part.trials[keep]
        seen.update(k for k, kept in zip(keys, keep) if kept)
        history = part.history[part.history[TRIAL_ID].isin(trials[TRIAL_ID])]
        if used_ids & set(trials[TRIAL_ID]):
            prefix = f"s{position}:"
            trials = trials.assign(**{TRIAL_ID: prefix + trials[TRIAL_ID].astype(str)})
            history = history.assign(**{TRIAL_ID: prefix + history[TRIAL_ID].astype(str)})
        used_ids.update(trials[TRIAL_ID])
        histories.append(history)
        trial_frames.append(trials)
        folders.append({"path": str(part.path), "runs": int(len(trials)), "command": part.settings.get("command"),
                        "seed_values": part.settings.get("seed_values")})
    settings = dict(parts[0].settings)
    settings.update(merged_from=folders, num_trials=int(sum(len(t) for t in trial_frames)),
                    seeds=f"{trial_frames[0]['seed'].nunique()}+ (per config: see the claims' n)")
    history = pd.concat(histories, ignore_index=True).sort_values([TRIAL_ID, STEP], kind="stable").reset_index(drop=True)
    return Experiment(parts[0].path, history, pd.concat(trial_frames, ignore_index=True), settings, notes)
