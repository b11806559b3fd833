"""Seeded bootstrap bands over seeds and the one "converges faster" measure used everywhere.

Converges faster = fewer steps to solve (first evaluated step with val exact match 1.0; a seed that
never solves counts as +inf). When neither of two settings is solved by most of its seeds, the
fallback is the area under the log10 train-loss curve (its mean over the steps both trained): lower is faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tune_adder.metrics import STEP, TRIAL_ID

MIN_SEEDS = 3  # fewer seeds than this: min-max bands and "suggested" verdicts only
N_BOOT = 2000
BOOT_SEED = 0  # every bootstrap restarts from this seed, so results do not depend on call order
CONFIDENCE = 0.95
STEPS_TO_SOLVE = "steps to solve"
LOSS_AREA = "mean log10 train loss"


def _resample(values: np.ndarray, stat) -> np.ndarray:
    rng = np.random.default_rng(BOOT_SEED)
    idx = rng.integers(0, len(values), size=(N_BOOT, len(values)))
    return stat(values[idx], axis=1)


def band(values, stat=np.mean) -> tuple[float, float, float, str]:
    """(statistic, low, high, kind): a bootstrap 95% interval from MIN_SEEDS values up, min-max below."""
    values = np.asarray(values, dtype=float)
    centre = float(stat(values))
    if len(values) >= MIN_SEEDS:
        boot = _resample(values, stat)
        tail = (1 - CONFIDENCE) / 2
        # "lower"/"higher" never interpolate, so an infinite (unsolved) median stays infinite, not nan.
        low = float(np.quantile(boot, tail, method="lower"))
        high = float(np.quantile(boot, 1 - tail, method="higher"))
        return centre, low, high, "bootstrap95"
    return centre, float(values.min()), float(values.max()), "min-max"


@dataclass(frozen=True)
class Comparison:
    """Is setting a faster than setting b? Medians over seeds of one measure, lower = faster."""

    measure: str
    a: tuple[float, float, float]  # median, low, high
    b: tuple[float, float, float]
    n_a: int
    n_b: int
    p_a_faster: float  # share of bootstrap resamples where a's median is below b's (point estimate below MIN_SEEDS)
    p_b_faster: float

    @property
    def enough_seeds(self) -> bool:
        return min(self.n_a, self.n_b) >= MIN_SEEDS

    @property
    def winner(self) -> str | None:
        """'a' or 'b' when one is faster in 97.5% of resamples (or by point estimate with few seeds)."""
        threshold = 1 - (1 - CONFIDENCE) / 2 if self.enough_seeds else 0.5
        if self.p_a_faster > threshold:
            return "a"
        if self.p_b_faster > threshold:
            return "b"
        return None


def compare(a, b, measure: str) -> Comparison:
    """Bootstrap the seeds of a and b independently and count how often each median is lower."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ba, bb = band(a, np.median), band(b, np.median)
    if min(len(a), len(b)) >= MIN_SEEDS:
        ma, mb = _resample(a, np.median), _resample(b, np.median)
        p_a, p_b = float(np.mean(ma < mb)), float(np.mean(mb < ma))
    else:
        p_a, p_b = float(ba[0] < bb[0]), float(bb[0] < ba[0])
    return Comparison(measure, ba[:3], bb[:3], len(a), len(b), p_a, p_b)


def steps_to_solve(trials: pd.DataFrame) -> np.ndarray:
    """Per trial, steps to solve with unsolved (never reached exact match 1.0) as +inf."""
    return trials["steps_to_solve"].astype(float).fillna(np.inf).to_numpy()


def loss_area(history: pd.DataFrame, trial_ids, horizon: float) -> np.ndarray:
    """Per trial, mean log10 train loss over steps <= horizon (trapezoid); a diverged curve counts +inf."""
    out = []
    for trial_id in trial_ids:
        curve = history[history[TRIAL_ID] == trial_id]
        curve = curve[curve[STEP] <= horizon]
        loss = curve["train_loss"].to_numpy(dtype=float)
        steps = curve[STEP].to_numpy(dtype=float)
        if len(loss) == 0 or not np.all(np.isfinite(loss)) or np.any(loss <= 0) or curve["diverged"].any():
            out.append(np.inf)
        elif len(loss) == 1:
            out.append(float(np.log10(loss[0])))
        else:
            out.append(float(np.trapezoid(np.log10(loss), steps) / (steps[-1] - steps[0])))
    return np.asarray(out)


def loss_areas(history: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-trial loss area of both settings over the steps every compared trial trained."""
    last_steps = history[history[TRIAL_ID].isin(pd.concat([a, b])[TRIAL_ID])].groupby(TRIAL_ID)[STEP].max()
    horizon = float(last_steps.min()) if len(last_steps) else 0.0
    return loss_area(history, a[TRIAL_ID], horizon), loss_area(history, b[TRIAL_ID], horizon)


def converges_faster(history: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame) -> Comparison:
    """Compare the trials of two settings with the module's measure and its fallback."""
    solve_a, solve_b = steps_to_solve(a), steps_to_solve(b)
    if np.isfinite(np.median(solve_a)) or np.isfinite(np.median(solve_b)):
        return compare(solve_a, solve_b, STEPS_TO_SOLVE)
    return compare(*loss_areas(history, a, b), LOSS_AREA)


def share_band(hits, counts) -> tuple[float, float, float]:
    """(share, low, high): the pooled share sum(hits) / sum(counts) with a 95% bootstrap interval that resamples
    whole clusters (a config with all its seeds), since seeds of one config are not independent of each other."""
    pairs = np.column_stack([np.asarray(hits, dtype=float), np.asarray(counts, dtype=float)])  # (clusters, 2)
    if pairs[:, 1].sum() == 0:
        return float("nan"), float("nan"), float("nan")
    share = float(pairs[:, 0].sum() / pairs[:, 1].sum())
    if len(pairs) < 2:
        return share, share, share
    with np.errstate(invalid="ignore"):
        boot = _resample(pairs, lambda x, axis: x[..., 0].sum(axis=axis) / x[..., 1].sum(axis=axis))
    boot = boot[np.isfinite(boot)]
    tail = (1 - CONFIDENCE) / 2
    return share, float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))
