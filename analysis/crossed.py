"""The crossed grid (`--grid full`): the seed's claims re-checked at every cell, lr and depth, the settings
that never solve, and how far each trained adder generalises. Pure extraction; drawing is in analysis.draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from tune_adder import generalisation
from tune_adder.metrics import CARRY_CHAIN_METRIC, PROBE_COLUMNS, PROBE_KINDS, PROBE_LADDER

from analysis.claims import UNFINISHED, ClaimResult, check_c2, check_c3, check_c4, check_c6
from analysis.extract import probed_trials, select, series_label, varied
from analysis.stats import (
    LOSS_AREA, N_RESAMPLES, RNG_SEED, STEPS_TO_SOLVE, censored_pair, holm, loss_areas, share_band, share_interval,
    steps_to_solve,
)

FACTORS = ("cell", "lr", "layers")  # what a crossed grid crosses at every digit length
REACH_COLUMNS = ("cell", "digits", "lr", "layers", "kind", "median_reach", "min_reach", "max_reach",
                 "n_beyond", "n_seeds")  # fmt: skip
NEVER_COLUMNS = ("digits", "cell", "lr", "layers", "n_seeds", "best_val_exact_match")


def is_crossed(trials: pd.DataFrame) -> bool:
    """Every (cell, lr, layers) combination finished at every digit length (for at least one seed), each factor with
    two or more values; a sweep still running qualifies once every combination has finished somewhere."""
    trials = trials[~trials["stop_reason"].isin(UNFINISHED)]
    if trials.empty:
        return False
    sizes = [len(varied(trials, c)) for c in ("digits", *FACTORS)]
    combos = trials.groupby(["digits", *FACTORS]).ngroups
    return min(sizes[1:]) >= 2 and combos == int(np.prod(sizes))


def crossed_claims(history: pd.DataFrame, trials: pd.DataFrame) -> list[ClaimResult]:
    """C2 per cell and lr, C3 per cell and depth (at every length), C4 per cell and lr, C6 per cell: the
    seed's one-factor claims at the settings the seed never tried. The seed's own settings are left to
    analysis.claims.check_claims, except C3, re-checked here at every length."""
    finished = trials[~trials["stop_reason"].isin(UNFINISHED)]
    cells, lrs, depths = (varied(finished, c) for c in FACTORS)
    lengths = tuple(int(d) for d in varied(finished, "digits"))
    results = []
    results += [check_c2(history, finished, cell=c, layers=2, lr=lr) for c in cells for lr in lrs]
    results += [check_c3(history, finished, cell=c, layers=n, lengths=lengths) for c in cells for n in depths]
    results += [check_c4(history, finished, cell=c, lr=lr) for c in cells for lr in lrs]
    results += [check_c6(history, finished, cell=c, layers=2, lr=0.01) for c in cells]
    seed_own = {"C2", "C4", "C6"}  # at the seed's settings: already in the main claims table
    return [r for r in results if r.claim not in seed_own]


def never_solved(trials: pd.DataFrame) -> pd.DataFrame:
    """Settings (digits, cell, lr, layers) at which no finished seed reached exact match 1.0 within max_steps."""
    finished = trials[~trials["stop_reason"].isin(UNFINISHED)]
    rows = []
    for (digits, cell, lr, layers), group in finished.groupby(["digits", *FACTORS], sort=True):
        if not np.isfinite(steps_to_solve(group)).any():
            rows.append(dict(digits=digits, cell=cell, lr=lr, layers=layers, n_seeds=len(group),
                             best_val_exact_match=float(group["best_val_exact_match"].max())))
    return pd.DataFrame(rows, columns=list(NEVER_COLUMNS))


def has_probes(trials: pd.DataFrame) -> bool:
    return set(PROBE_COLUMNS) <= set(trials.columns) and trials[list(PROBE_COLUMNS[:-2])].notna().any().any()


def trial_reach(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per probed trial and probe kind: how far that adder generalises on that kind of sum (the
    longest rung up to which every rung passes, the trained length if none)."""
    probed = probed_trials(trials)
    rows = [dict(cell=row["cell"], digits=row["digits"], lr=row["lr"], layers=row["layers"], seed=row["seed"], kind=kind,
                 reach=generalisation.reach(row, int(row["digits"]), kinds=(kind,)))
            for row in probed.to_dict("records") for kind in PROBE_KINDS]
    return pd.DataFrame(rows, columns=["cell", "digits", "lr", "layers", "seed", "kind", "reach"])


def reach_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, digits, lr, layers) and probe kind: the reach's median, min and max over seeds. The median is the
    lower one (the longest length a majority of seeds reach): with an even number of seeds the midpoint of two rungs,
    5,050 for seeds reaching 100 and 10,000, would be a length nobody probed."""
    rows = []
    for (cell, digits, lr, layers, kind), group in trial_reach(trials).groupby(["cell", "digits", "lr", "layers", "kind"], sort=True):
        reach = np.sort(group["reach"].to_numpy())
        rows.append(dict(cell=cell, digits=digits, lr=lr, layers=layers, kind=kind, median_reach=int(reach[(len(reach) - 1) // 2]),
                         min_reach=int(reach.min()), max_reach=int(reach.max()), n_beyond=int((reach > digits).sum()),
                         n_seeds=len(reach)))
    return pd.DataFrame(rows, columns=list(REACH_COLUMNS))


def reach_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per cell, lr and kind: how many trained adders (all lengths, depths and seeds) reach each rung of the ladder,
    counted among those trained on shorter sums than the rung."""
    per_trial = trial_reach(trials)
    rows = []
    for (cell, lr, kind), group in per_trial.groupby(["cell", "lr", "kind"], sort=True):
        row = dict(cell=cell, lr=lr, kind=kind, adders=len(group))
        for n in PROBE_LADDER:  # out of the adders trained on shorter sums: a rung at the trained length proves nothing
            shorter = group[group["digits"] < n]
            row[f"reach >= {n:,}"] = f"{int((shorter['reach'] >= n).sum())}/{len(shorter)}"
        rows.append(row)
    return pd.DataFrame(rows)


def _share(name: str, hits: pd.Series, clusters: pd.Series) -> dict:
    """{name}_hits, _of, _share, _low, _high over trials; the interval from resampling whole configs."""
    by = pd.DataFrame({"hit": hits.astype(float), "config": clusters}).groupby("config")["hit"]
    k, n = by.sum(), by.count()
    share, low, high = share_band(k, n)
    return {f"{name}_hits": int(k.sum()), f"{name}_of": int(n.sum()), f"{name}_share": share, f"{name}_low": low,
            f"{name}_high": high}


def factor_effects(trials: pd.DataFrame, by: tuple[str, ...]) -> pd.DataFrame:
    """Per value of the factors `by`, over every other factor and seed of a crossed grid (balanced, so each value
    sees the same mix of the rest): the share of adders that solved their trained length within max_steps
    (`solved_*`), and of those, the share exact on carry chains of their trained length (`carry_trained_*`), and
    on uniform sums (`uniform_top_*`) and carry chains (`carry_top_*`) all the way up the probe ladder.
    Intervals: 95% bootstrap over configs (a config's seeds together); shares of nothing are NaN."""
    finished = trials[~trials["stop_reason"].isin(UNFINISHED)].copy()
    finished["_config"] = finished[["digits", *FACTORS]].astype(str).agg("/".join, axis=1)
    finished["_solved"] = np.isfinite(steps_to_solve(finished))
    probed = has_probes(finished)
    if probed:
        reach = trial_reach(finished).pivot_table(index=["cell", "digits", "lr", "layers", "seed"], columns="kind",
                                                  values="reach")
        keys = pd.MultiIndex.from_frame(finished[["cell", "digits", "lr", "layers", "seed"]])
        for kind, name in zip(PROBE_KINDS, ("uniform_top", "carry_top")):
            finished[f"_{name}"] = reach.reindex(keys)[kind].to_numpy() >= PROBE_LADDER[-1]
    # The held-out score is on random sums, which rarely carry far: how many "solved" adders also add carry chains
    # of their own trained length (the evaluation's carry-chain set, at the last step)?
    finished["_carry_trained"] = finished[f"final_{CARRY_CHAIN_METRIC}"].astype(float) >= generalisation.PASS_EXACT_MATCH
    rows = []
    for key, group in finished.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        solved = group[group["_solved"]]
        row = {**dict(zip(by, key)), "configs": group["_config"].nunique(), "adders": len(group),
               **_share("solved", group["_solved"], group["_config"]),
               **_share("carry_trained", solved["_carry_trained"], solved["_config"])}
        if probed:
            for name in ("uniform_top", "carry_top"):
                row.update(_share(name, solved[f"_{name}"], solved["_config"]))
        rows.append(row)
    return pd.DataFrame(rows)


def effects_tables(trials: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The report's factor tables: each factor alone (one table, its values stacked), then each factor crossed
    with the cell, the seed's own question of whether a claim holds for one cell only."""
    alone = pd.concat([factor_effects(trials, (f,)).rename(columns={f: "value"}).assign(factor=f)
                       for f in ("digits", *FACTORS)], ignore_index=True)
    alone = alone[["factor", *[c for c in alone.columns if c != "factor"]]]
    return [("One factor at a time", alone)] + [(f"cell x {f}", factor_effects(trials, ("cell", f)))
                                                 for f in ("lr", "layers", "digits")]


# The seed's claims about one factor, tested as a whole over a crossed grid: each says `a` converges faster than `b`
# for every listed pair, in every stratum (a combination of the other factors), on the lengths given.
@dataclass(frozen=True)
class FactorClaim:
    claim: str
    statement: str
    factor: str
    pairs: tuple[tuple, ...]  # (a, b): a is claimed faster than b
    lengths: tuple[int, ...] | None = None  # None: every length


FACTOR_CLAIMS = (
    FactorClaim("C2", "the longer the numbers, the slower the convergence", "digits", ((10, 20), (20, 50), (50, 100))),
    FactorClaim("C3", "lr 0.01 and 0.1 converge faster than 0.001 (10/20/50 digits)", "lr", ((0.01, 0.001), (0.1, 0.001)), (10, 20, 50)),
    FactorClaim("C4 10/20", "at 10/20 digits, more layers converge faster", "layers", ((2, 1), (3, 2), (4, 3)), (10, 20)),
    FactorClaim("C4 50/100", "at 50/100 digits, 2 layers converge fastest", "layers", ((2, 1), (2, 3), (2, 4)), (50, 100)),
    FactorClaim("C5 10", "at 10 digits RNN converges faster than LSTM, LSTM faster than GRU", "cell", (("RNN", "LSTM"), ("LSTM", "GRU")), (10,)),
    FactorClaim("C5 20+", "at 20/50/100 digits RNN converges faster than GRU, GRU faster than LSTM", "cell",
                (("RNN", "GRU"), ("GRU", "LSTM")), (20, 50, 100)),
)
POOLED_COLUMNS = ("claim", "statement", "measure", "pair", "strata", "claimed_way", "against", "ties", "median_difference",
                  "low", "high", "p", "p_holm", "verdict", "flips")  # fmt: skip


def _stratum_label(key: dict) -> str:
    return ", ".join(series_label(k, v) if k != "cell" else str(v) for k, v in key.items())


def _pair_differences(history: pd.DataFrame, trials: pd.DataFrame, spec: FactorClaim, a, b, measure: str) -> pd.DataFrame:
    """Per stratum of the other factors: median over seeds of the measure at a minus that at b (lower = faster)."""
    others = [f for f in ("digits", *FACTORS) if f != spec.factor]
    rows = []
    for key, group in trials.groupby(others, sort=True):
        at_a, at_b = select(group, {spec.factor: a}), select(group, {spec.factor: b})
        if at_a.empty or at_b.empty:
            continue
        if measure == STEPS_TO_SOLVE:
            va, vb = censored_pair(history, at_a, at_b)
        else:
            va, vb = loss_areas(history, at_a, at_b)
        rows.append(dict(stratum=_stratum_label(dict(zip(others, key))), d=float(np.median(va) - np.median(vb))))
    return pd.DataFrame(rows, columns=["stratum", "d"])


def pooled_claims(history: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Each factor claim as a whole: per pair and measure, a Wilcoxon signed-rank test over strata of the difference in
    medians (two-sided, exact where scipy can), the median difference with a bootstrap 95% interval over strata, and the
    strata where it goes against the claim; the claim's verdict per measure from its pairs, Holm-corrected."""
    from analysis.claims import Outcome, verdict  # the same verdict rules as the one-stratum claims

    finished = trials[~trials["stop_reason"].isin(UNFINISHED)]
    rows = []
    for spec in FACTOR_CLAIMS:
        subset = finished if spec.lengths is None else finished[finished["digits"].isin(spec.lengths)]
        for measure in (STEPS_TO_SOLVE, LOSS_AREA):
            claim_rows = []
            for a, b in spec.pairs:
                diffs = _pair_differences(history, subset, spec, a, b, measure)
                d = diffs["d"].to_numpy(dtype=float)
                d = d[np.isfinite(d)]
                nonzero = d[d != 0]
                if len(nonzero) == 0:
                    continue
                test = sps.wilcoxon(nonzero, alternative="two-sided")
                low = high = float(np.median(d))
                if len(d) > 1 and np.ptp(d) > 0:
                    ci = sps.bootstrap((np.sort(d),), np.median, n_resamples=N_RESAMPLES, method="percentile",
                                       rng=np.random.default_rng(RNG_SEED)).confidence_interval
                    low, high = float(ci.low), float(ci.high)
                against = diffs[diffs["d"] > 0]
                claim_rows.append(dict(
                    claim=spec.claim, statement=spec.statement, measure=measure,
                    pair=f"{series_label(spec.factor, a)} vs {series_label(spec.factor, b)}", strata=len(d),
                    claimed_way=int((d < 0).sum()), against=int((d > 0).sum()), ties=int((d == 0).sum()),
                    median_difference=float(np.median(d)), low=low, high=high, p=float(test.pvalue),
                    flips="; ".join(against["stratum"]), _way=float(np.median(nonzero)) < 0 if np.median(nonzero) != 0 else None,
                    _min_p=min(1.0, 2 * 0.5 ** len(nonzero))))
            if not claim_rows:
                continue
            adjusted = holm([r["p"] for r in claim_rows])
            outcomes = [Outcome(r["p"], r["_way"], r["_min_p"], True) for r in claim_rows]
            answer = verdict(outcomes)
            for r, p in zip(claim_rows, adjusted):
                r.update(p_holm=float(p), verdict=answer)
            rows += claim_rows
    return pd.DataFrame(rows, columns=list(POOLED_COLUMNS))


# The reach figure's ladder: exact at the trained length, then at each probed length. A rung counts only when every
# shorter one passed too, so a share can only fall along it.
REACH_RUNGS = ("trained", *(str(n) for n in PROBE_LADDER))
TRAINED_EXACT = {"uniform": "final_val_exact_match", "carry_chain": f"final_{CARRY_CHAIN_METRIC}"}
SHARE_COLUMNS = ("cell", "layers", "kind", "rung", "hits", "n", "share", "low", "high", "never_solved", "adders")


def reach_shares(trials: pd.DataFrame) -> pd.DataFrame:
    """Per cell, depth, probe kind and rung of REACH_RUNGS, pooled over lr and trained length: how many of the adders
    that solved their own length (val exact match 1.0 at three evaluations in a row) are exact (>= PASS_EXACT_MATCH) at that
    rung and at every shorter one. The trained rung is the last evaluation's exact match at the trained length
    (held-out uniform sums, or the evaluation's carry chains); the probed rungs pass as generalisation.reach passes
    them. Adders that never solved their own length are not in `n`: they are counted in `never_solved` (of `adders`).
    Finished, probed trials only. Interval: exact Clopper-Pearson 95% over the `n` adders as independent."""
    finished = trials[~trials["stop_reason"].isin(UNFINISHED)]
    probed = probed_trials(finished)
    rows = []
    for (cell, layers), group in probed.groupby(["cell", "layers"], sort=True):
        solved = group[np.isfinite(steps_to_solve(group))]  # sustained where the loader computed it
        never = len(group) - len(solved)
        for kind in PROBE_KINDS:
            # trained_digits=0: the reach is then the longest probed rung of the unbroken run of passes, 0 for none
            ladder = np.array([generalisation.reach(row, 0, kinds=(kind,)) for row in solved.to_dict("records")], dtype=float)
            at_trained = solved[TRAINED_EXACT[kind]].astype(float).fillna(0.0).to_numpy() >= generalisation.PASS_EXACT_MATCH
            for rung in REACH_RUNGS:
                passed = at_trained if rung == "trained" else at_trained & (ladder >= int(rung))
                hits, n = int(passed.sum()), len(solved)
                _, low, high = share_interval(hits, n)
                rows.append(dict(cell=cell, layers=layers, kind=kind, rung=rung, hits=hits, n=n,
                                 share=hits / n if n else float("nan"), low=low, high=high, never_solved=never,
                                 adders=len(group)))
    return pd.DataFrame(rows, columns=list(SHARE_COLUMNS))
