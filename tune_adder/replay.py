"""Recorded sweeps as a tabular benchmark: every config's evaluations, served again instead of training.

A dataset is a finished sweep's frames (history.parquet, trials.parquet, experiment.json). A replayed
trial asks for its config and seed and gets the recorded evaluations of that config under that same seed
(a seed the dataset did not record is refused, never served as a copy of another), so a search or scheduler
sees exactly what training would have shown it, in seconds. Nothing here imports Ray; `trainable.replay_adder`
is the Ray side.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tune_adder.frames import ends_solved
from tune_adder.metrics import EVAL_METRICS, METRIC, PROBE_COLUMNS, RECORDED_TIME, SOLVED_PATIENCE, STEP, TRIAL_ID

HISTORY_FILE, TRIALS_FILE, EXPERIMENT_FILE = "history.parquet", "trials.parquet", "experiment.json"
# What identifies a recorded setting; the seed picks among its recordings.
SETTING_KEYS = ("digits", "lr", "layers", "cell", "hidden", "embed_dim", "batch_size", "base")


class ReplayError(ValueError):
    """The dataset cannot serve what was asked (missing files, configs, steps or seeds)."""


def setting_key(config: dict[str, Any]) -> tuple:
    """Exact for ints and strings; learning rates compared to 10 significant digits (0.1 vs 0.1000000001)."""
    return tuple(f"{float(config[k]):.10g}" if k == "lr" else config[k] for k in SETTING_KEYS)


@dataclass
class Recording:
    """A loaded dataset: per setting, the recorded seeds' evaluations and their trial rows."""

    path: Path
    settings: dict[str, Any]
    eval_every: int | None
    max_steps: int
    _curves: dict[tuple, dict[int, list[dict[str, Any]]]] = field(default_factory=dict, repr=False)
    _finals: dict[tuple, dict[int, dict[str, Any]]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        path = Path(path).expanduser()
        missing = [name for name in (HISTORY_FILE, TRIALS_FILE) if not (path / name).is_file()]
        if missing:
            raise ReplayError(f"--replay {str(path)!r}: no {' or '.join(missing)} there; give a finished sweep's folder")
        history, trials = pd.read_parquet(path / HISTORY_FILE), pd.read_parquet(path / TRIALS_FILE)
        settings = json.loads((path / EXPERIMENT_FILE).read_text()) if (path / EXPERIMENT_FILE).is_file() else {}
        open_trials = trials["stop_reason"].isin(("running", "error"))
        if open_trials.any():
            raise ReplayError(f"--replay {str(path)!r}: {int(open_trials.sum())} trials did not finish (running or error); "
                              "replay needs a finished sweep")
        eval_every = settings.get("eval_every") or step_spacing(history)
        rec = cls(path, settings, eval_every, int(trials["max_steps"].max()))
        by_trial = {tid: group.sort_values(STEP) for tid, group in history.groupby(TRIAL_ID)}
        for row in trials.to_dict("records"):
            key, seed = setting_key(row), int(row["seed"])
            curve = by_trial.get(row[TRIAL_ID])
            reports = [] if curve is None else [_report(r) for r in curve.to_dict("records")]
            rec._curves.setdefault(key, {})[seed] = reports
            rec._finals.setdefault(key, {})[seed] = row
        return rec

    def has(self, config: dict[str, Any]) -> bool:
        return setting_key(config) in self._curves

    def seeds(self, config: dict[str, Any]) -> list[int]:
        return sorted(self._curves.get(setting_key(config), {}))

    def recorded_seed(self, config: dict[str, Any]) -> int:
        """The recording a trial replays: the one under its own seed. Another seed's run is never served in its place."""
        seeds, seed = self.seeds(config), int(config.get("seed", 0))
        if seed not in seeds:
            recorded = f"recorded seeds: {', '.join(map(str, seeds))}" if seeds else "no recording at all"
            raise ReplayError(f"the dataset has no recording of {_show(config)} under seed {seed} ({recorded})")
        return seed

    def common_seeds(self, configs: list[dict[str, Any]]) -> list[int]:
        """The seeds recorded for every one of these configs: the only seeds a replay of them can serve."""
        per_config = [set(self.seeds(c)) for c in configs]
        return sorted(set.intersection(*per_config)) if per_config else []

    def reports(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        """The recorded evaluations up to the trial's max_steps, each with the time it took (RECORDED_TIME); with
        stop_when_solved, only up to where training would have stopped (solved_prefix)."""
        seed = self.recorded_seed(config)
        limit = int(config.get("max_steps", self.max_steps))
        served = [r for r in self._curves[setting_key(config)][seed] if r[STEP] <= limit]
        return solved_prefix(served) if config.get("stop_when_solved") else served

    def final(self, config: dict[str, Any]) -> dict[str, Any]:
        """How the replayed trial ends, and the recorded run's length-generalisation probes when it replays all of
        it. Cut short (a smaller max_steps, or solved sooner than the recording ran), it ends at its last served
        step unprobed: the recorded probes are of a model trained longer, and nothing is invented."""
        row = self._finals[setting_key(config)][self.recorded_seed(config)]
        served = self.reports(config)
        cut = bool(served) and int(served[-1][STEP]) < int(row["steps_trained"])
        if config.get("stop_when_solved") and ends_solved(served):
            reason = "solved"
        else:
            reason = "completed" if cut else row["stop_reason"]
        probes = {} if cut else {c: _plain(row.get(c)) for c in PROBE_COLUMNS if _plain(row.get(c)) is not None}
        return {"stop_reason": reason, **probes}

    def configs(self) -> list[dict[str, Any]]:
        """Every recorded setting, as a config (lr as recorded, to 10 significant digits)."""
        return [{**dict(zip(SETTING_KEYS, key)), "lr": float(key[SETTING_KEYS.index("lr")])} for key in self._curves]

    def missing(self, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [c for c in configs if not self.has(c)]

    def values(self, key: str) -> list:
        """The recorded values of one setting column (an Optuna replay searches only these)."""
        index = SETTING_KEYS.index(key)
        raw = {k[index] for k in self._curves}
        return sorted(float(v) for v in raw) if key == "lr" else sorted(raw)


def solved_prefix(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluations a --stop-when-solved run would have made: up to the SOLVED_PATIENCE-th solved one in a row
    (the trainer's streak count)."""
    streak = 0
    for i, r in enumerate(reports):
        streak = streak + 1 if r.get(METRIC) == 1.0 else 0
        if streak == SOLVED_PATIENCE:
            return reports[: i + 1]
    return reports


def step_spacing(history: pd.DataFrame) -> int | None:
    """The evaluation interval a dataset without experiment.json was recorded at: the commonest gap between a trial's
    evaluations, counted from step 0 and leaving out its last gap (a run's last evaluation comes at max_steps, which
    may be sooner)."""
    gaps = []
    for _, steps in history.groupby(TRIAL_ID)[STEP]:
        steps = sorted(int(x) for x in steps)
        gaps += [b - a for a, b in zip([0, *steps], steps)][: max(1, len(steps) - 1)]
    return int(pd.Series(gaps).mode().max()) if gaps else None


def _plain(value):
    """numpy/pandas scalars as Python values; NA and NaN as None."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _report(row: dict[str, Any]) -> dict[str, Any]:
    out = {m: _plain(row.get(m)) for m in EVAL_METRICS}
    out[RECORDED_TIME] = _plain(row.get("time_total_s"))
    return out


def _show(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={config.get(k)}" for k in SETTING_KEYS)
