"""Pure extraction: result frames in, a tidy frame of exactly what one figure draws out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tune_adder.metrics import CONFIG_COLUMNS, STEP, TRIAL_ID

from analysis.stats import band, steps_to_solve

# The seed's default run: every figure holds the factors it does not vary at these values.
SEED_DEFAULT = {"cell": "RNN", "layers": 2, "lr": 0.001}
SETTING_COLUMNS = tuple(c for c in CONFIG_COLUMNS if c != "seed")
UNFINISHED = ("running", "error")  # a partial sweep's open trials
MARKED_STOPS = ("early_stopped", "solved", "diverged", "error", "running")  # curves that end before max_steps
CURVE_COLUMNS = ("panel", "series", STEP, "value", "low", "high", "n_seeds", "band", "kind", "seed")
HEATMAP_COLUMNS = ("cell", "digits", "lr", "layers", "median_steps_to_solve", "low", "high", "n_solved", "n_seeds", "band")


@dataclass
class Slice:
    """The trials a figure or claim looks at: `fixed` values for every config column it does not vary."""

    fixed: dict
    notes: list[str] = field(default_factory=list)


def _matches(column: pd.Series, value) -> pd.Series:
    if isinstance(value, (float, np.floating)):
        return pd.Series(np.isclose(column.astype(float), value, rtol=1e-9, atol=0.0), index=column.index)
    return column == value


def select(frame: pd.DataFrame, fixed: dict) -> pd.DataFrame:
    """Rows of `frame` whose config columns equal every value in `fixed`."""
    keep = pd.Series(True, index=frame.index)
    for column, value in fixed.items():
        keep &= _matches(frame[column], value)
    return frame[keep]


def varied(trials: pd.DataFrame, column: str) -> list:
    """The sorted distinct values the sweep gave `column`."""
    return sorted(trials[column].dropna().unique().tolist())


def hold_fixed(trials: pd.DataFrame, free: tuple[str, ...]) -> Slice:
    """Fix every config column not in `free`: the seed default when the sweep has it, else the commonest value."""
    fixed, notes = {}, []
    for column in SETTING_COLUMNS:
        values = varied(trials, column)
        if column in free or len(values) <= 1:
            continue
        default = SEED_DEFAULT.get(column)
        if default is not None and len(select(trials, {column: default})):
            fixed[column] = default
        else:
            fixed[column] = trials[column].mode().iloc[0]
            reason = f"the seed default {default} is not in the sweep" if default is not None else "it is not plotted"
            notes.append(f"{column} held at {fixed[column]}, its commonest value ({reason})")
    return Slice(fixed, notes)


def _mean_rows(values: pd.DataFrame, panel, series) -> list[dict]:
    rows = []
    for step, group in values.groupby(STEP):
        finite = group["value"].to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]  # a diverged seed drops out of the mean (and is marked)
        if len(finite) == 0:
            continue
        mean, low, high, kind = band(finite)
        rows.append(dict(panel=panel, series=series, step=step, value=mean, low=low, high=high,
                         n_seeds=len(finite), band=kind if len(finite) > 1 else "none", kind="mean", seed=np.nan))
    return rows


def _end_rows(values: pd.DataFrame, trials: pd.DataFrame, panel, series) -> list[dict]:
    rows = []
    for trial in trials[trials["stop_reason"].isin(MARKED_STOPS)].itertuples():
        curve = values[(values[TRIAL_ID] == trial.trial_id) & np.isfinite(values["value"].astype(float))]
        if curve.empty:
            continue
        last = curve.iloc[-1]
        rows.append(dict(panel=panel, series=series, step=last[STEP], value=float(last["value"]), low=np.nan,
                         high=np.nan, n_seeds=1, band="none", kind=trial.stop_reason, seed=trial.seed))
    return rows


def curves(history: pd.DataFrame, trials: pd.DataFrame, series: str, panel: str | None, metric: str) -> tuple[pd.DataFrame, Slice]:
    """Mean over seeds of `metric` against step, one curve per `series` value and one panel per `panel` value.

    Rows of kind "mean" carry the band over seeds; rows of kind early_stopped/solved/diverged/error mark
    where a single trial's curve ended early, at that trial's own last finite value.
    """
    chosen = hold_fixed(trials, tuple(c for c in (series, panel) if c))
    picked = select(trials, chosen.fixed)
    values = history[history[TRIAL_ID].isin(picked[TRIAL_ID])][[TRIAL_ID, STEP, metric]].rename(columns={metric: "value"})
    rows: list[dict] = []
    group_by = [panel, series] if panel else [series]
    for key, group in picked.groupby(group_by, sort=True):
        panel_value, series_value = key if panel else (None, key[0])
        own = values[values[TRIAL_ID].isin(group[TRIAL_ID])]
        rows += _mean_rows(own, panel_value, series_value)
        rows += _end_rows(own, group, panel_value, series_value)
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS)), chosen


def solve_heatmap(trials: pd.DataFrame) -> tuple[pd.DataFrame, Slice]:
    """Median steps to solve over seeds per (cell, digits, lr, layers); unsolved medians are NaN (+inf high).
    Unfinished trials of a partial sweep are left out: not solved *yet* is not "never solves"."""
    chosen = hold_fixed(trials, ("cell", "digits", "lr", "layers"))
    picked = select(trials, chosen.fixed)
    open_trials = picked["stop_reason"].isin(UNFINISHED)
    if open_trials.any():
        chosen.notes.append(f"{int(open_trials.sum())} unfinished trials (running or error) left out; squares with none finished are blank")
        picked = picked[~open_trials]
    rows = []
    for (cell, digits, lr, layers), group in picked.groupby(["cell", "digits", "lr", "layers"], sort=True):
        solve = steps_to_solve(group)
        median, low, high, kind = band(solve, np.median)
        rows.append(dict(cell=cell, digits=digits, lr=lr, layers=layers,
                         median_steps_to_solve=median if np.isfinite(median) else np.nan,
                         low=low, high=high, n_solved=int(np.isfinite(solve).sum()), n_seeds=len(solve), band=kind))
    frame = pd.DataFrame(rows, columns=list(HEATMAP_COLUMNS))
    # A cell type run at a single (lr, layers) per length has no map to draw; fig 8 and the claims cover it.
    squares = frame.groupby(["cell", "digits"]).size().groupby("cell").max()
    single = [c for c in squares.index if squares[c] < 2]
    if single and len(single) < len(squares):
        chosen.notes.append(f"cells {single} left out: run at one (lr, layers) per digit length only")
        frame = frame[~frame["cell"].isin(single)].reset_index(drop=True)
    return frame, chosen


def series_label(factor: str, value) -> str:
    """How a config value is named in legends and claim evidence: '10 digits', 'lr 0.01', '1 layer'."""
    if factor == "digits":
        return f"{int(value)} digits"
    if factor == "layers":
        return f"{int(value)} layer" + ("s" if int(value) != 1 else "")
    if factor == "lr":
        return f"lr {value:g}"
    return str(value)
