"""How much each factor of a crossed grid (digits, lr, layers, cell) matters for convergence and for generalisation:
Optuna's fANOVA importances on an in-memory study built from the trials. Pure: trials in, a small frame out.
"""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution

from tune_adder import generalisation
from tune_adder.metrics import PROBE_LADDER

from analysis.extract import UNFINISHED, probed_trials
from analysis.stats import steps_to_solve

FACTORS = ("digits", "lr", "layers", "cell")  # what a crossed grid crosses
FANOVA_SEED = 0  # the forest is random: a fixed seed gives the same importances every run
CENSOR_AFTER = 50  # an adder that never solved counts as solving at max_steps + this (one evaluation past the end)
STEPS = "steps to solve"
CARRY_REACH = "log10 carry-chain reach"
CARRY_TOP = "exact on carry chains to 10,000 digits"
MEASURES = {  # what each measure is, for the figure and the report
    STEPS: f"steps to solve as the report counts them; adders that never solved censored at max_steps + {CENSOR_AFTER}",
    CARRY_REACH: "log10 of the longest probed length up to which every carry-chain probe passes (the trained length if none)",
    CARRY_TOP: "1 if that reach is 10,000 (exact match >= 0.99 on carry chains of 100, 1,000 and 10,000 digits), else 0",
}
IMPORTANCE_COLUMNS = ("measure", "factor", "importance", "variance_share", "trials")
# A second opinion from a classical multi-way ANOVA would need statsmodels (scipy has none); it is not a dependency.
ANOVA_NOTE = "no ANOVA second opinion: statsmodels, which has a multi-way ANOVA, is not installed (scipy has none)"


def measures(trials: pd.DataFrame) -> dict[str, pd.Series]:
    """Per finished trial, each measure of MEASURES (indexed like `trials`); the generalisation ones over probed
    trials only."""
    finished = trials[~trials["stop_reason"].isin(UNFINISHED)]
    solve = pd.Series(steps_to_solve(finished), index=finished.index)  # +inf: never solved
    censored = solve.where(np.isfinite(solve), finished["max_steps"].astype(float) + CENSOR_AFTER)
    probed = probed_trials(finished)
    reach = pd.Series([generalisation.reach(row, int(row["digits"]), kinds=("carry_chain",))
                       for row in probed.to_dict("records")], index=probed.index, dtype=float)
    return {STEPS: censored, CARRY_REACH: np.log10(reach), CARRY_TOP: (reach >= PROBE_LADDER[-1]).astype(float)}


def _plain(value):
    """numpy scalars as the Python values Optuna's distributions accept."""
    return value.item() if isinstance(value, np.generic) else value


def fanova(trials: pd.DataFrame, values: pd.Series) -> dict[str, float]:
    """Per varied factor, the share of the variance of `values` that its main effect explains, by Optuna's fANOVA
    on an in-memory study of one completed trial per row. Every factor is categorical: the grid's values, not a
    range between them. A factor the rows hold at one value is left out (it explains nothing)."""
    rows = trials.loc[values.index]
    varied = [f for f in FACTORS if rows[f].nunique() > 1]
    distributions = {f: CategoricalDistribution(tuple(_plain(v) for v in sorted(rows[f].unique()))) for f in varied}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per in-memory study
    try:
        study = optuna.create_study(direction="minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials([optuna.trial.create_trial(params={f: _plain(row[f]) for f in varied}, distributions=distributions,
                                                value=float(value))
                      for row, value in zip(rows.to_dict("records"), values)])
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=FANOVA_SEED)
    return {f: float(v) for f, v in evaluator.evaluate(study, params=varied).items()}


def factor_importance(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per measure and factor: `importance`, the factor's fANOVA main effect normalised over the four factors
    (they sum to 1 per measure), and `variance_share`, the same effect as a share of the variance the forest models
    (their sum falls short of 1 by what interactions explain). A measure with no variance, and a factor the trials
    hold at one value, have NaN. See ANOVA_NOTE for the second opinion this does not give."""
    rows = []
    for measure, values in measures(trials).items():
        values = values.dropna()
        shares = fanova(trials, values) if values.nunique() > 1 else {}
        total = sum(shares.values())
        for factor in FACTORS:
            share = shares.get(factor, np.nan)
            rows.append(dict(measure=measure, factor=factor, importance=share / total if total > 0 else np.nan,
                             variance_share=share, trials=len(values)))
    return pd.DataFrame(rows, columns=list(IMPORTANCE_COLUMNS))
