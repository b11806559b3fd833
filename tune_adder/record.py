"""The experiment record, `<storage>/<name>/experiment.json`: what a sweep was run with, its sessions and status.

No Ray here: the runner passes in what it knows of Ray (its version, whether Tune saved state).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import pandas as pd

from tune_adder import spaces
from tune_adder.frames import ERROR, HISTORY_FILE, TERMINATED, TRIALS_FILE
from tune_adder.metrics import METRIC, MODE
from tune_adder.replay import Recording
from tune_adder.settings import EXPERIMENT_FILE, OPTUNA_FILE, RESUME_DEFAULTS, RESUME_KEYS, Settings, UsageError, now
from tune_adder.storage import Storage

# experiment.json "status": a rerun resumes anything but COMPLETED (errored trials from their checkpoints).
COMPLETED, PARTIAL, FAILED, INTERRUPTED = "completed", "partial", "failed", "interrupted"
ASHA_KEYS = ("grace_period", "reduction_factor", "asha_metric")  # the RESUME_KEYS only --scheduler asha uses
# Keys every experiment.json of this project has: a file without them is someone else's.
RECORD_KEYS = frozenset({"name", "search", "num_trials", "status", "sessions"})


def check_same_settings(record: dict[str, Any], s: Settings) -> None:
    """A rerun with different trial settings is refused, not mixed into the experiment."""
    ours = asdict(s)
    theirs = {k: record.get(k, RESUME_DEFAULTS.get(k)) for k in RESUME_KEYS}  # a key added since: its value then
    # ASHA's settings shape no trial of a FIFO sweep: a FIFO sweep resumes whatever they are (their defaults may change).
    keys = [k for k in RESUME_KEYS if k not in ASHA_KEYS or "asha" in (ours["scheduler"], theirs["scheduler"])]
    diffs = [f"--{k.replace('_', '-')} {theirs[k]!r} there, {ours[k]!r} now" for k in keys if theirs[k] != ours[k]]
    if diffs:
        raise UsageError(
            f"experiment {s.name!r} in {s.storage} was run with other settings ({'; '.join(diffs)}); "
            "rerun it with its own flags, choose another --name, or pass --restart"
        )


def read_record(storage: Storage, name: str) -> dict[str, Any] | None:
    """The record in `<storage>/<name>`; None if nothing (or an empty folder) is there.

    Anything else at that path is not ours: refused with a UsageError, so that neither a fresh run nor
    --restart writes into, or moves, a folder this project did not make.
    """
    import pyarrow.fs as pafs

    path = storage.path(name)
    kind = storage.fs.get_file_info(path).type
    if kind == pafs.FileType.NotFound:
        return None
    where = f"--name {name!r}: {path}"
    if kind != pafs.FileType.Directory:
        raise UsageError(f"{where} exists and is not a folder; it is left untouched: choose another --name or --storage")
    record_path = storage.path(name, EXPERIMENT_FILE)
    if not storage.exists(record_path):
        if storage.fs.get_file_info(pafs.FileSelector(path)):
            raise UsageError(
                f"{where} exists and holds no tune_adder experiment (no {EXPERIMENT_FILE}); it is left untouched: "
                "choose another --name or --storage"
            )
        return None
    try:
        record = storage.read_json(record_path)
    except (ValueError, OSError):
        record = None
    if not isinstance(record, dict) or not RECORD_KEYS <= record.keys():
        raise UsageError(
            f"{where} holds an {EXPERIMENT_FILE} that is not a tune_adder experiment record; it is left untouched: "
            "choose another --name or --storage"
        )
    return record


def start_record(s: Settings, command: str, previous: dict[str, Any] | None, ray_version: str) -> dict[str, Any]:
    """experiment.json for a new run, or the previous one with a new session appended on resume."""
    session = {"start_time": now(), "end_time": None, "wall_time_s": None, "resumed": previous is not None, "command": command}
    if previous is not None:
        previous.update(status="running", end_time=None, wall_time_s=None)
        previous["sessions"].append(session)
        return previous
    settings = asdict(s)
    return {
        "name": s.name,
        "storage": s.storage,
        "path": Storage.from_arg(s.storage).path(s.name),
        **{k: settings[k] for k in RESUME_KEYS},
        "seed_values": s.seed_values() if s.search == "grid" or s.pack == "seeds" else [0],
        "ray_trials": s.num_samples if s.search == "optuna" else len(spaces.grid_points(s.trial_configs(), s.seed_values(), s.pack)),
        "search_space": describe_space(s),
        "replay_of": Recording.load(s.replay).settings.get("command") if s.replay else None,
        "num_trials": num_trials(s),
        "metric": METRIC,
        "mode": MODE,
        "cpus_per_trial": s.cpus_per_trial,
        "gpus_per_trial": s.gpus_per_trial,
        "max_failures": s.max_failures,
        "address": s.address,
        "ray_version": ray_version,
        "command": command,
        "files": {"history": HISTORY_FILE, "trials": TRIALS_FILE, "optuna_study": OPTUNA_FILE if optuna_local(s) else None},
        "status": "running",
        "start_time": session["start_time"],
        "end_time": None,
        "wall_time_s": None,
        "sessions": [session],
    }


def experiment_status(trials: pd.DataFrame, num_trials: int) -> str:
    """completed: every trial ended well; partial / failed: every trial ended, some / all in error; else interrupted."""
    if len(trials) < num_trials or not trials["status"].isin([TERMINATED, ERROR]).all():
        return INTERRUPTED
    errors = int((trials["status"] == ERROR).sum())
    return COMPLETED if errors == 0 else FAILED if errors == len(trials) else PARTIAL


def finish_record(storage: Storage, name: str, record: dict[str, Any], trials: pd.DataFrame, session_start: float) -> None:
    status = experiment_status(trials, record["num_trials"])
    done = status != INTERRUPTED
    end = now()
    session = record["sessions"][-1]
    session.update(end_time=end, wall_time_s=round(time.time() - session_start, 2))
    record.update(
        status=status,
        end_time=end if done else None,
        wall_time_s=round(sum(x["wall_time_s"] or 0 for x in record["sessions"]), 2) if done else None,
        trial_counts=trials["stop_reason"].value_counts().to_dict(),
    )
    storage.write_json(storage.path(name, EXPERIMENT_FILE), record)


def describe_space(s: Settings) -> dict[str, Any]:
    if s.search == "optuna" and s.replay:  # a replay searches only the recorded values
        recording = Recording.load(s.replay)
        return {"digits": s.digits, **{k: recording.values(k) for k in ("lr", "layers", "cell", "hidden", "embed_dim", "batch_size")}}
    if s.search == "optuna":
        return {
            "digits": s.digits, "lr": {"loguniform": list(spaces.OPTUNA_LR)}, "layers": {"randint_inclusive": list(spaces.OPTUNA_LAYERS)},
            "cell": list(spaces.CELLS), "hidden": list(spaces.OPTUNA_HIDDEN), "embed_dim": list(spaces.OPTUNA_EMBED),
            "batch_size": list(spaces.OPTUNA_BATCH),
        }  # fmt: skip
    return {"configs": s.trial_configs()}


def num_trials(s: Settings) -> int:
    """Rows of trials.parquet when done: one per (config, seed), packed or not."""
    if s.search == "optuna":
        return s.num_samples * (s.seeds if s.pack == "seeds" else 1)
    return len(s.trial_configs()) * s.seeds


def optuna_local(s: Settings) -> bool:
    """Optuna's study is kept in an SQLite file in the experiment folder only when storage is local."""
    return s.search == "optuna" and Storage.from_arg(s.storage).is_local
