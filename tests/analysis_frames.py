"""Hand-built result frames shaped exactly as tune_adder.metrics says, for the analysis tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tune_adder.metrics import EVAL_METRICS, HISTORY_COLUMNS, PROBE_COLUMNS, TRIAL_COLUMNS

BASE_CONFIG = dict(digits=10, lr=0.001, layers=2, cell="RNN", hidden=64, embed_dim=32, batch_size=200, base=10,
                   seed=0, max_steps=1000)


def trial(solve_at: int | None = None, end_at: int | None = None, stop_reason: str | None = None,
          diverge_at: int | None = None, eval_every: int = 100, **config) -> dict:
    """One trial's spec: solved at `solve_at` (None: never), ended at `end_at` (None: max_steps)."""
    return dict(config={**BASE_CONFIG, **config}, solve_at=solve_at, end_at=end_at, stop_reason=stop_reason,
                diverge_at=diverge_at, eval_every=eval_every)


def _curve(spec: dict) -> pd.DataFrame:
    config, solve_at = spec["config"], spec["solve_at"]
    end = spec["end_at"] or config["max_steps"]
    steps = np.arange(spec["eval_every"], end + 1, spec["eval_every"])
    scale = (solve_at or 4 * config["max_steps"]) / 4  # loss falls ~e^-4 by the solve step
    train_loss = 2.3 * np.exp(-steps / scale) + 1e-3
    exact = np.clip(steps / (solve_at or 8 * config["max_steps"]), 0, 1) ** 2
    diverged = np.zeros(len(steps), dtype=bool)
    if spec["diverge_at"] is not None:
        diverged = steps >= spec["diverge_at"]
        train_loss = np.where(diverged, np.nan, train_loss)
        exact = np.where(diverged, 0.0, exact)
    metrics = {m: np.full(len(steps), 0.5) for m in EVAL_METRICS}
    metrics.update(step=steps, samples_seen=steps * config["batch_size"], train_loss=train_loss,
                   val_loss=train_loss * 1.1, val_exact_match=exact, val_digit_acc=np.sqrt(exact),
                   steps_per_s=np.full(len(steps), 50.0), diverged=diverged)
    frame = pd.DataFrame({**config, **metrics})
    frame["time_total_s"] = steps / 50.0
    return frame


def frames(specs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, trials) with the exact columns of tune_adder.metrics."""
    histories, rows = [], []
    for i, spec in enumerate(specs):
        curve = _curve(spec).assign(trial_id=f"t{i:04d}")
        histories.append(curve)
        last = curve.iloc[-1]
        solved = curve.loc[curve["val_exact_match"] >= 1.0, "step"]
        diverged = bool(curve["diverged"].any())
        reason = spec["stop_reason"] or ("diverged" if diverged else "completed")
        row = {**spec["config"], "trial_id": f"t{i:04d}", "status": "TERMINATED", "stop_reason": reason}
        row.update({f"final_{m}": last[m] for m in EVAL_METRICS if m not in ("step", "diverged")})
        row.update(best_val_exact_match=curve["val_exact_match"].max(),
                   steps_to_solve=int(solved.iloc[0]) if len(solved) else None, diverged=diverged,
                   steps_trained=int(last["step"]), wall_time_s=float(last["time_total_s"]))
        row.update({c: spec.get("probes", {}).get(c) for c in PROBE_COLUMNS})  # None: not probed
        rows.append(row)
    history = pd.concat(histories, ignore_index=True)[list(HISTORY_COLUMNS)]
    trials = pd.DataFrame(rows)[list(TRIAL_COLUMNS)]
    trials["steps_to_solve"] = trials["steps_to_solve"].astype("Int64")
    return history, trials


def write_experiment(folder: Path, specs: list[dict], settings: dict | None = None) -> Path:
    """Write history.parquet, trials.parquet and experiment.json the way the sweep does."""
    folder.mkdir(parents=True, exist_ok=True)
    history, trials = frames(specs)
    history.to_parquet(folder / "history.parquet")
    trials.to_parquet(folder / "trials.parquet")
    (folder / "experiment.json").write_text(json.dumps(settings or {"grid": "handmade", "seeds": 3}))
    return folder


def grid(solve_at, seeds=(0, 1, 2), eval_every: int = 100, **axes) -> list[dict]:
    """Full factorial over `axes` (name -> values) and seeds; solve_at(config) -> step or None."""
    specs = [{}]
    for name, values in axes.items():
        specs = [{**s, name: v} for s in specs for v in values]
    return [trial(solve_at=solve_at({**BASE_CONFIG, **s, "seed": seed}), seed=seed, eval_every=eval_every, **s)
            for s in specs for seed in seeds]
