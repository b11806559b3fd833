"""Where more seeds would decide what these cannot: the settings behind undecided verdicts and uncertain shares, and
the sweep commands that add exactly those seeds. Pure extraction; plot_convergence.py writes the files.

A comparison of n seeds against n can reach p = 2 / C(2n, n) at best (stats.min_p_value); a claim with k checks needs
that below ALPHA / k (Holm's first step). A share of seeds (how many generalise) is an estimate only when its exact 95%
interval is narrower than SHARE_WIDTH.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tune_adder import generalisation
from tune_adder.metrics import CARRY_CHAIN_METRIC, PROBE_LADDER

from analysis.claims import SETTING_KEY, ClaimResult
from analysis.extract import probed_trials
from analysis.stats import ALPHA, min_p_value, share_interval, steps_to_solve

UNDECIDED = ("undecidable", "inconclusive")
MIN_SHARE_SEEDS = 10  # a share of seeds from fewer runs than this is not reported as an estimate
SHARE_WIDTH = 0.6  # an exact 95% interval at least this wide (3 of 3: 0.29-1.0 is 0.71; 10 of 10: 0.69-1.0 is 0.31)
GENERALISATION_COLUMNS = ("digits", "lr", "layers", "cell", "seeds", "solved", "regressed", "rung", "kind", "hits", "of",
                          "share", "low", "high")  # fmt: skip


def seeds_to_decide(checks: int, now: int) -> int:
    """The fewest seeds per setting (at least `now`) with which a claim of `checks` checks could be decided."""
    n = max(now, 2)
    while min_p_value(n, n) * max(checks, 1) >= ALPHA and n < 50:
        n += 1
    return n


def _run_counts(trials: pd.DataFrame) -> pd.Series:
    return trials.groupby(list(SETTING_KEY)).size()


def undecided_settings(results: list[ClaimResult], trials: pd.DataFrame) -> pd.DataFrame:
    """The settings of every check of a claim left undecidable or inconclusive on either measure, with the seeds
    that claim would need: one row per setting, its largest need and the claims that ask for it."""
    counts = _run_counts(trials)
    rows = []
    for r in results:
        if not any(v in UNDECIDED for v in r.verdicts.values()):
            continue
        for check in r.checks:
            for key in check.settings:
                if not key:
                    continue
                now = int(counts.get(key, 0))
                rows.append(dict(zip(SETTING_KEY, key), seeds_now=now, seeds_wanted=seeds_to_decide(len(r.checks), now),
                                 why=r.claim))
    return _merge(rows)


def _merge(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=[*SETTING_KEY, "seeds_now", "seeds_wanted", "why"])
    frame = pd.DataFrame(rows)
    return (frame.groupby(list(SETTING_KEY), sort=True)
            .agg(seeds_now=("seeds_now", "max"), seeds_wanted=("seeds_wanted", "max"),
                 why=("why", lambda w: ", ".join(dict.fromkeys(w))))
            .reset_index())


def generalisation_by_config(trials: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per config, probe kind and rung (the trained length, then the ladder): of the seeds that solved their length
    (sustained), how many are exact (>= 0.99) there and at every shorter rung, with the exact 95% interval."""
    rows = []
    for key, group in trials.groupby(list(SETTING_KEY), sort=True):
        solved = group[np.isfinite(steps_to_solve(group, history))]
        regressed = int((solved["final_val_exact_match"].astype(float) < 1.0).sum())
        for kind, trained_metric in (("carry_chain", f"final_{CARRY_CHAIN_METRIC}"), ("uniform", "final_val_exact_match")):
            passing = solved[trained_metric].astype(float).to_numpy() >= generalisation.PASS_EXACT_MATCH
            rungs = [("trained", passing)]
            unprobed = solved.empty or probed_trials(solved).empty  # a sweep that predates the probes
            for n in PROBE_LADDER:
                if n <= key[0]:
                    continue
                column = f"probe_{kind}_{n}"
                if unprobed or column not in solved:
                    break
                passing = passing & (solved[column].astype(float).to_numpy() >= generalisation.PASS_EXACT_MATCH)
                rungs.append((f"{n:,}", passing))
            for rung, hits in rungs:
                share, low, high = share_interval(int(hits.sum()), len(hits))
                rows.append(dict(zip(SETTING_KEY, key), seeds=len(group), solved=len(solved), regressed=regressed, rung=rung,
                                 kind=kind, hits=int(hits.sum()), of=len(hits), share=share, low=low, high=high))
    return pd.DataFrame(rows, columns=list(GENERALISATION_COLUMNS))


def uncertain_shares(shares: pd.DataFrame) -> pd.DataFrame:
    """Configs whose carry-chain shares at a probed rung are split across seeds (some pass, some fail) and still wide:
    more seeds would turn them into estimates (at least MIN_SHARE_SEEDS)."""
    probed = shares[(shares["kind"] == "carry_chain") & (shares["rung"] != "trained")]
    split = probed[(probed["hits"] > 0) & (probed["hits"] < probed["of"]) & (probed["high"] - probed["low"] >= SHARE_WIDTH)]
    rows = [dict(zip(SETTING_KEY, key), seeds_now=int(g["seeds"].max()), seeds_wanted=max(MIN_SHARE_SEEDS, int(g["seeds"].max())),
                 why="generalisation share split across seeds") for key, g in split.groupby(list(SETTING_KEY), sort=True)]
    return _merge(rows)


def more_seeds(results: list[ClaimResult], trials: pd.DataFrame, shares: pd.DataFrame | None) -> pd.DataFrame:
    """Every setting more seeds would decide, with how many it has and how many it needs (the larger ask wins)."""
    parts = [undecided_settings(results, trials)] + ([uncertain_shares(shares)] if shares is not None else [])
    merged = _merge([row for part in parts for row in part.to_dict("records")])
    return merged[merged["seeds_wanted"] > merged["seeds_now"]].reset_index(drop=True)


def sweep_commands(wanted: pd.DataFrame, trials: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(file name, configs) per group of settings that need the same new seeds, with the command that trains them:
    seeds from one past the largest seed the study has, so no run is repeated."""
    if wanted.empty:
        return []
    first = int(trials["seed"].max()) + 1 if len(trials) else 0
    groups = []
    for (now, want), group in wanted.groupby(["seeds_now", "seeds_wanted"], sort=True):
        name = f"more_seeds_{now}to{want}.csv"
        add = int(want - now)
        command = f"python -m tune_adder.sweep --configs {name} --first-seed {first} --seeds {add}"
        groups.append((name, group[list(SETTING_KEY)].reset_index(drop=True), command))
    return groups
