"""The sweep's result frames, built from plain trial records (no Ray): `history` and `trials`.

Column names and stop reasons come from `tune_adder.metrics`; `results.py` fills the records from Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tune_adder.metrics import (
    CONFIG_COLUMNS,
    EVAL_METRICS,
    GENERALISES_BEYOND,
    GENERALISES_TO,
    HISTORY_COLUMNS,
    METRIC,
    MODE,
    PROBE_COLUMNS,
    SOLVED_PATIENCE,
    STEP,
    MEMBERS,
    PACK_LRS,
    PACK_SEEDS,
    RECORDED_TIME,
    STOP_REASONS,
    TRIAL_COLUMNS,
    TRIAL_ID,
)

HISTORY_FILE = "history.parquet"  # the frames' file names in the experiment folder
TRIALS_FILE = "trials.parquet"
# Ray's trial statuses that mean the trial will not run again in this sweep.
TERMINATED, ERROR, RUNNING = "TERMINATED", "ERROR", "RUNNING"
# Key the trainable adds to each report: "running" until its final report names how the run ended.
STOP_REASON_KEY = "stop_reason"


@dataclass
class TrialRecord:
    """One trial as the sweep saw it: its flat config, Ray status and every report, repeats included."""

    trial_id: str
    config: dict[str, Any]
    status: str
    reports: list[dict[str, Any]] = field(default_factory=list)


def pack_members(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The flat config of every member of a trial pack (lr-major, then seed), or [config] for a plain trial."""
    if PACK_SEEDS not in config:
        return [config]
    base = {k: v for k, v in config.items() if k not in (PACK_SEEDS, PACK_LRS)}
    lrs = parse_pack_list(config[PACK_LRS], float) if config.get(PACK_LRS) else [config["lr"]]
    return [{**base, "lr": lr, "seed": seed} for lr in lrs for seed in parse_pack_list(config[PACK_SEEDS], int)]


def pack_list(values) -> str:
    """A pack's seeds or lrs as one config value, "0,1,2": Ray Tune would read a list as a nested search space."""
    return ",".join(repr(v) for v in values)


def parse_pack_list(value, kind) -> list:
    """The inverse of pack_list (a list is accepted as it is)."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        parsed = [kind(v) for v in items if str(v).strip() != ""]
    except ValueError:
        raise ValueError(f"{value!r}: must be a comma-separated list of {kind.__name__} values") from None
    if not parsed:
        raise ValueError(f"{value!r}: a trial pack needs at least one member")
    return parsed


def member_key(member: dict[str, Any]) -> str:
    """A member's key in a pack report's MEMBERS dict: "lr0.01_s2" (a dict, so loggers flatten it to scalars)."""
    return f"lr{member['lr']!r}_s{member['seed']}"


def member_trial_id(trial_id: str, member: dict[str, Any], config: dict[str, Any]) -> str:
    """A member's own trial id: the pack's, then its seed (and its lr when the pack holds several)."""
    lr = f"_lr{member['lr']:g}" if config.get(PACK_LRS) else ""
    return f"{trial_id}{lr}_s{member['seed']}"


def unpack_records(records: list[TrialRecord]) -> list[TrialRecord]:
    """Each trial pack as one record per member, with that member's own reports (pack-level keys such as
    time_total_s added), so the frames have one trial per (config, seed) whether or not trials were packed."""
    out = []
    for rec in records:
        if PACK_SEEDS not in rec.config:
            out.append(rec)
            continue
        for member in pack_members(rec.config):
            own = []
            for report in rec.reports:
                entry = (report.get(MEMBERS) or {}).get(member_key(member))
                if entry is not None:
                    own.append({**{k: v for k, v in report.items() if k not in (MEMBERS, STOP_REASON_KEY)}, **entry})
            out.append(TrialRecord(member_trial_id(rec.trial_id, member, rec.config), member, rec.status, own))
    return out


def dedupe_reports(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One report per step, the last one kept: a trial restored from a checkpoint re-reports steps."""
    by_step: dict[int, dict[str, Any]] = {}
    for report in reports:
        if STEP in report and report[STEP] is not None:
            by_step[int(report[STEP])] = report  # later reports overwrite earlier ones
    return [by_step[s] for s in sorted(by_step)]


def steps_to_solve(reports: list[dict[str, Any]]) -> int | None:
    """The first evaluated step with val_exact_match == 1.0, or None if the trial never got there."""
    for report in reports:
        if report.get(METRIC) == 1.0:
            return int(report[STEP])
    return None


def stop_reason(status: str, reports: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """How the trial ended: the trainer's reason, early_stopped if the scheduler cut it, error, or running."""
    if status == ERROR:
        return "error"
    last = reports[-1] if reports else {}
    reason = last.get(STOP_REASON_KEY)
    if reason in STOP_REASONS and reason != "running":
        return reason
    if status != TERMINATED:
        return "running"
    # Stopped by Ray after a report but before the trainable's final one: tell the cases apart from the data.
    if last.get("diverged"):
        return "diverged"
    if last and last.get(STEP, 0) >= config.get("max_steps", float("inf")):
        return "completed"
    if config.get("stop_when_solved") and ends_solved(reports):
        return "solved"
    return "early_stopped"


def ends_solved(reports: list[dict[str, Any]]) -> bool:
    """The last SOLVED_PATIENCE evaluations all solved: where --stop-when-solved ends a trial (train.Trainer)."""
    recent = reports[-SOLVED_PATIENCE:]
    return len(recent) == SOLVED_PATIENCE and all(r.get(METRIC) == 1.0 for r in recent)


def _time(report: dict[str, Any]):
    """Seconds since the trial started: the recorded run's for a replayed trial, Ray's otherwise."""
    return report.get(RECORDED_TIME, report.get("time_total_s"))


def _config_values(config: dict[str, Any]) -> dict[str, Any]:
    return {c: config.get(c) for c in CONFIG_COLUMNS}


def history_frame(records: list[TrialRecord]) -> pd.DataFrame:
    """Every report of every trial, one row per (trial_id, step)."""
    rows = []
    for rec in unpack_records(records):
        cfg = _config_values(rec.config)
        for report in dedupe_reports(rec.reports):
            rows.append({TRIAL_ID: rec.trial_id, **cfg, **{m: report.get(m) for m in EVAL_METRICS}, "time_total_s": _time(report)})
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)).astype({"diverged": "boolean"})


def _trial_row(rec: TrialRecord) -> dict[str, Any]:
    reports = dedupe_reports(rec.reports)
    last = reports[-1] if reports else {}
    finals = {f"final_{m}": last.get(m) for m in EVAL_METRICS if m not in (STEP, "diverged")}
    scores = [r[METRIC] for r in reports if r.get(METRIC) is not None]
    return {
        TRIAL_ID: rec.trial_id,
        **_config_values(rec.config),
        "status": rec.status,
        "stop_reason": stop_reason(rec.status, reports, rec.config),
        **finals,
        "best_val_exact_match": max(scores) if scores else None,
        "steps_to_solve": steps_to_solve(reports),
        "diverged": any(bool(r.get("diverged")) for r in reports),
        "steps_trained": int(last[STEP]) if last else 0,
        "wall_time_s": _time(last) if last else None,
        **{c: last.get(c) for c in PROBE_COLUMNS},  # in the final report only
    }


def trials_frame(records: list[TrialRecord]) -> pd.DataFrame:
    """One row per trial: config, status, stop reason, final and best metrics, steps_to_solve."""
    frame = pd.DataFrame([_trial_row(r) for r in unpack_records(records)], columns=list(TRIAL_COLUMNS))
    probe_types = {c: "Float64" for c in PROBE_COLUMNS} | {GENERALISES_TO: "Int64", GENERALISES_BEYOND: "boolean"}
    return frame.astype({"steps_to_solve": "Int64", "steps_trained": "int64", "diverged": "bool", **probe_types})


def best_trials(trials: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The n best trials by the sweep's metric, ties broken by fewer steps to solve."""
    ascending = MODE == "min"
    ranked = trials.assign(_solve=trials["steps_to_solve"].astype("float").fillna(float("inf")))
    ranked = ranked.sort_values(["best_val_exact_match", "_solve"], ascending=[ascending, True], na_position="last")
    return ranked.drop(columns="_solve").head(n)
