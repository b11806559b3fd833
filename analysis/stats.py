"""The study's statistics: per-trial measures, a rank test between two settings, intervals that say what they are.

Two measures of "converges faster", both lower = faster, reported side by side:
- steps to solve, sustained: the first of SOLVED_PATIENCE evaluations in a row with val exact match 1.0 (the
  trainer's --stop-when-solved rule); a seed that never gets there is censored at max_steps + eval_every;
- the loss: mean log10 train loss over the steps every compared trial trained (the area under the log curve).
A comparison of two settings is a two-sided exact permutation test (scipy.stats.permutation_test, every split of
the pooled seeds when there are at most PERMUTATIONS of them) of the difference in mean ranks, so ties, censored
and infinite values are handled and the answer cannot depend on which run carries which seed label; its effect
is the difference of medians with a bootstrap interval that resamples each setting's seeds on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
import pandas as pd
from scipy import stats as sps

from tune_adder.frames import ends_solved
from tune_adder.metrics import METRIC, SOLVED_PATIENCE, STEP, TRIAL_ID
from tune_adder.replay import solved_prefix, step_spacing

MIN_SEEDS = 3  # fewer seeds than this: point estimates only ("suggested")
ALPHA = 0.05  # two-sided, after Holm's correction within a claim
N_RESAMPLES = 9999  # bootstrap resamples
PERMUTATIONS = 20000  # a permutation test enumerates every split up to this many (8 vs 8 seeds: 12,870), else samples
RNG_SEED = 0
CONFIDENCE = 0.95
STEPS_TO_SOLVE = "steps to solve"
LOSS_AREA = "mean log10 train loss"
MEASURES = (STEPS_TO_SOLVE, LOSS_AREA)
RANGE, BOOTSTRAP = "range", "bootstrap95"  # what an interval is: the min..max of the values, or a bootstrap 95 %


def band(values, stat=np.mean) -> tuple[float, float, float, str]:
    """(statistic, low, high, kind): a bootstrap 95% interval of the statistic from more than MIN_SEEDS values, the
    range (min..max) of the values up to MIN_SEEDS (a bootstrap of 3 values is their range, so it is called that)."""
    values = np.sort(np.asarray(values, dtype=float))  # sorted: the interval cannot depend on the order of the seeds
    centre = float(stat(values))
    if len(values) <= MIN_SEEDS or np.all(values == values[0]) or not np.all(np.isfinite(values)):
        return centre, float(values.min()), float(values.max()), RANGE
    res = sps.bootstrap((values,), lambda x, axis: stat(x, axis=axis), n_resamples=N_RESAMPLES, method="percentile",
                        confidence_level=CONFIDENCE, rng=np.random.default_rng(RNG_SEED))
    return centre, float(res.confidence_interval.low), float(res.confidence_interval.high), BOOTSTRAP


def min_p_value(n_a: int, n_b: int) -> float:
    """The smallest two-sided p-value rank_test can give for n_a vs n_b values: 2 / C(n_a+n_b, n_a) when it enumerates
    every split (3 vs 3: 0.1, so no 3-seed comparison can be significant at 0.05; 5 vs 5: 0.0079; 8 vs 8: 0.00016), else
    the Monte Carlo floor 2 / (PERMUTATIONS + 1) (10 vs 10: 0.0001)."""
    if not (n_a and n_b):
        return 1.0
    splits = comb(n_a + n_b, n_a)
    return min(1.0, 2.0 / splits if splits <= PERMUTATIONS else 2.0 / (PERMUTATIONS + 1))


def _mean_rank_difference(x, y, axis=-1):
    ranks = sps.rankdata(np.concatenate([x, y], axis=axis), axis=axis)
    n = x.shape[axis]
    return np.take(ranks, range(n), axis=axis).mean(axis=axis) - np.take(ranks, range(n, ranks.shape[axis]), axis=axis).mean(axis=axis)


def rank_test(a, b) -> tuple[float, float]:
    """(p, statistic): two-sided permutation test of mean rank of a minus mean rank of b (negative: a lower)."""
    a, b = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    if min(len(a), len(b)) < 2:  # no test with one value a side: p 1, the direction by the point estimates
        return 1.0, float(np.sign(np.median(a) - np.median(b))) if len(a) and len(b) else 0.0
    res = sps.permutation_test((a, b), _mean_rank_difference, permutation_type="independent", vectorized=True,
                               n_resamples=PERMUTATIONS, alternative="two-sided", rng=np.random.default_rng(RNG_SEED))
    return float(min(1.0, res.pvalue)), float(res.statistic)


def median_difference(a, b) -> tuple[float, float, float]:
    """median(a) - median(b) and a 95% bootstrap interval that resamples a and b independently (percentile)."""
    a, b = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    diff = float(np.median(a) - np.median(b))
    if min(len(a), len(b)) < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return diff, diff, diff
    res = sps.bootstrap((a, b), lambda x, y, axis: np.median(x, axis=axis) - np.median(y, axis=axis), n_resamples=N_RESAMPLES,
                        method="percentile", confidence_level=CONFIDENCE, rng=np.random.default_rng(RNG_SEED))
    return diff, float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass(frozen=True)
class Comparison:
    """Setting a against setting b on one measure (lower = faster): medians, ranges, the test and the difference."""

    measure: str
    a: tuple[float, float, float]  # median, min, max over seeds
    b: tuple[float, float, float]
    n_a: int
    n_b: int
    p: float  # two-sided exact (or Monte Carlo) permutation p-value of the rank difference
    statistic: float  # mean rank of a minus mean rank of b: < 0 when a is lower (faster)
    difference: tuple[float, float, float]  # median a - median b, bootstrap 95% low, high
    min_p: float  # the smallest p this many seeds could give

    @property
    def enough_seeds(self) -> bool:
        return min(self.n_a, self.n_b) >= MIN_SEEDS

    @property
    def lower(self) -> str | None:
        """'a' or 'b': the side with the lower mean rank (the direction, not a verdict)."""
        return "a" if self.statistic < 0 else "b" if self.statistic > 0 else None


def compare(a, b, measure: str) -> Comparison:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    p, statistic = rank_test(a, b)
    spread = lambda x: (float(np.median(x)), float(np.min(x)), float(np.max(x)))  # noqa: E731
    return Comparison(measure, spread(a), spread(b), len(a), len(b), p, statistic, median_difference(a, b),
                      min_p_value(len(a), len(b)))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the chance of any false rejection)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(p)
    out[order] = adjusted
    return out


def share_interval(hits: int, n: int) -> tuple[float, float, float]:
    """(share, low, high): hits of n with the exact (Clopper-Pearson) 95% interval; NaN for n = 0."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    ci = sps.binomtest(int(hits), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return hits / n, float(ci.low), float(ci.high)


def solved_streak_start(exact_match) -> float:
    """The first step of the first SOLVED_PATIENCE evaluations in a row at exact match 1.0 (inf if none), given a
    trial's (step, exact match) pairs in step order: where the trainer's --stop-when-solved streak began."""
    prefix = solved_prefix([{STEP: step, METRIC: value} for step, value in exact_match])
    return float(prefix[-SOLVED_PATIENCE][STEP]) if ends_solved(prefix) else np.inf


def sustained_solve(history: pd.DataFrame) -> pd.Series:
    """Per trial id, the sustained steps to solve (solved_streak_start of its evaluations)."""
    ordered = history.sort_values([TRIAL_ID, STEP], kind="stable")
    return ordered.groupby(TRIAL_ID, sort=False).apply(
        lambda g: solved_streak_start(zip(g[STEP].to_numpy(), g[METRIC].to_numpy())), include_groups=False)


SUSTAINED = "steps_to_solve_sustained"  # the column analysis.load adds to trials: sustained steps to solve, NaN if never


def steps_to_solve(trials: pd.DataFrame, history: pd.DataFrame | None = None) -> np.ndarray:
    """Per trial: sustained steps to solve (the SUSTAINED column the loader adds, or computed from `history`); only
    for raw frames with neither, the first touch of 1.0 (the trials frame's steps_to_solve). Never solved is +inf."""
    if SUSTAINED in trials:
        values = trials[SUSTAINED].astype(float).fillna(np.inf).to_numpy()
    elif history is not None:
        values = sustained_solve(history[history[TRIAL_ID].isin(trials[TRIAL_ID])]).reindex(trials[TRIAL_ID]).to_numpy(dtype=float)
        values = np.where(np.isnan(values), np.inf, values)
    else:
        values = trials["steps_to_solve"].astype(float).fillna(np.inf).to_numpy()
    return values


def regressions(history: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that were solved (sustained) and ended below exact match 1.0: solved, then lost."""
    solved = np.isfinite(steps_to_solve(trials, history))
    lost = trials["final_val_exact_match"].astype(float).to_numpy() < 1.0
    return trials[solved & lost]


def loss_area(history: pd.DataFrame, trial_ids, horizon: float) -> np.ndarray:
    """Per trial, mean log10 train loss over steps <= horizon (trapezoid); a diverged curve counts +inf."""
    out = []
    for trial_id in trial_ids:
        curve = history[history[TRIAL_ID] == trial_id].sort_values(STEP)  # never trust the frame's row order
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


def censored_pair(history: pd.DataFrame | None, a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Sustained steps to solve of two settings, a never-solved seed on either side at one shared value: the larger
    max_steps plus one evaluation (so two settings that never solve tie, whatever their budgets)."""
    va, vb = steps_to_solve(a, history), steps_to_solve(b, history)
    spacing = step_spacing(history) if history is not None and len(history) else None
    cap = float(pd.concat([a, b])["max_steps"].max()) + (spacing or 50.0)
    return np.where(np.isfinite(va), va, cap), np.where(np.isfinite(vb), vb, cap)


def converges_faster(history: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame) -> dict[str, Comparison]:
    """Both measures for the trials of two settings: {STEPS_TO_SOLVE: ..., LOSS_AREA: ...}."""
    return {STEPS_TO_SOLVE: compare(*censored_pair(history, a, b), STEPS_TO_SOLVE),
            LOSS_AREA: compare(*loss_areas(history, a, b), LOSS_AREA)}


def share_band(hits, counts) -> tuple[float, float, float]:
    """(share, low, high): the pooled share sum(hits) / sum(counts) with a 95% bootstrap interval that resamples
    whole clusters (a config with all its seeds), since seeds of one config are not independent of each other."""
    pairs = np.column_stack([np.asarray(hits, dtype=float), np.asarray(counts, dtype=float)])  # (clusters, 2)
    if pairs[:, 1].sum() == 0:
        return float("nan"), float("nan"), float("nan")
    share = float(pairs[:, 0].sum() / pairs[:, 1].sum())
    if len(pairs) < 2 or np.all(pairs[:, 0] * pairs[0, 1] == pairs[0, 0] * pairs[:, 1]):
        return share, share, share
    pairs = pairs[np.lexsort(pairs.T[::-1])]  # a canonical order: the interval cannot depend on the clusters' order
    res = sps.bootstrap((np.arange(len(pairs)),), lambda i, axis: pairs[i, 0].sum(axis=axis) / np.maximum(pairs[i, 1].sum(axis=axis), 1e-300),
                        n_resamples=N_RESAMPLES, method="percentile", confidence_level=CONFIDENCE, rng=np.random.default_rng(RNG_SEED))
    return share, float(res.confidence_interval.low), float(res.confidence_interval.high)
