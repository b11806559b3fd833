"""Pure extraction: result frames in, a tidy frame of exactly what one figure draws out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from tune_adder.metrics import CONFIG_COLUMNS, PROBE_KINDS, PROBE_LADDER, STEP, TRIAL_ID, probe_column

from analysis.stats import CONFIDENCE, band, steps_to_solve

# The seed's default run: every figure holds the factors it does not vary at these values.
SEED_DEFAULT = {"cell": "RNN", "layers": 2, "lr": 0.001}
SETTING_COLUMNS = tuple(c for c in CONFIG_COLUMNS if c != "seed")
UNFINISHED = ("running", "error")  # a partial sweep's open trials
MARKED_STOPS = ("early_stopped", "solved", "diverged", "error", "running")  # curves that end before max_steps
CURVE_COLUMNS = ("panel", "series", STEP, "value", "low", "high", "n_seeds", "band", "kind", "seed")
HEATMAP_COLUMNS = ("cell", "digits", "lr", "layers", "median_steps_to_solve", "low", "high", "n_solved", "n_seeds", "band")
DIFFERENCE_COLUMNS = ("panel", "pair", STEP, "value", "low", "high", "n_a", "n_b", "band")
RANGE_UP_TO = 3  # seeds: a bootstrap of this few values is little more than their range, so the band is the range
CELL_PAIRS = (("LSTM", "RNN"), ("GRU", "RNN"), ("GRU", "LSTM"))  # fig 8: each cell against the simpler ones
DIFFERENCE_RESAMPLES, DIFFERENCE_SEED = 9999, 0  # fig 8's bootstrap: seeded, so the figure is the same every run


@dataclass
class Slice:
    """The trials a figure or claim looks at: `fixed` values for every config column it does not vary."""

    fixed: dict
    notes: list[str] = field(default_factory=list)


def probed_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that ran their length-generalisation probes: both first-rung columns measured. A kind's higher
    rungs are NaN after its first failing rung (tune_adder/probes.py), which generalisation.reach reads as a fail."""
    first = [probe_column(kind, PROBE_LADDER[0]) for kind in PROBE_KINDS]
    if not set(first) <= set(trials.columns):
        return trials.iloc[0:0]
    return trials[trials[first].notna().all(axis=1)]


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


def is_geometric(metric: str) -> bool:
    """Losses span decades and are drawn on a log axis: their curves average log10 (a geometric mean)."""
    return metric.endswith("loss")


def mean_band(values) -> tuple[float, float, float, str]:
    """(mean, low, high, band): the band is the range (min-max) up to RANGE_UP_TO values, a bootstrap 95% interval
    of the mean from there up, and "none" for a single value."""
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return float(values[0]), float(values[0]), float(values[0]), "none"
    if len(values) <= RANGE_UP_TO:
        return float(values.mean()), float(values.min()), float(values.max()), "range"
    return band(values)


def _finite(values: pd.Series, geometric: bool) -> np.ndarray:
    """The values that enter a mean: finite ones (a diverged seed drops out, and is marked), as log10 for losses."""
    values = values.to_numpy(dtype=float)
    if not geometric:
        return values[np.isfinite(values)]
    values = values[np.isfinite(values) & (values > 0)]
    return np.log10(values)


def _mean_rows(values: pd.DataFrame, panel, series, geometric: bool) -> list[dict]:
    rows = []
    for step, group in values.groupby(STEP):
        finite = _finite(group["value"], geometric)
        if len(finite) == 0:
            continue
        mean, low, high, kind = mean_band(finite)
        if geometric:  # back from log10: the geometric mean and its band, in the metric's own units
            mean, low, high = 10**mean, 10**low, 10**high
        rows.append(dict(panel=panel, series=series, step=step, value=mean, low=low, high=high,
                         n_seeds=len(finite), band=kind, kind="mean", seed=np.nan))
    return rows


def _seed_rows(values: pd.DataFrame, trials: pd.DataFrame, panel, series) -> list[dict]:
    """Each seed's own curve (its finite values), drawn thin under the mean so a seed that disagrees shows."""
    seeds = trials.set_index(TRIAL_ID)["seed"]
    finite = values[np.isfinite(values["value"].astype(float))]
    return [dict(panel=panel, series=series, step=row[STEP], value=float(row["value"]), low=np.nan, high=np.nan,
                 n_seeds=1, band="none", kind="seed", seed=seeds[row[TRIAL_ID]])
            for row in finite.to_dict("records")]


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

    Rows of kind "mean" carry the mean over seeds (for a loss the geometric mean, 10 ** mean log10) and its band
    (see mean_band); rows of kind "seed" are each seed's own curve; rows of kind early_stopped/solved/diverged/error
    mark where a single trial's curve ended early, at that trial's own last finite value.
    """
    chosen = hold_fixed(trials, tuple(c for c in (series, panel) if c))
    picked = select(trials, chosen.fixed)
    values = history[history[TRIAL_ID].isin(picked[TRIAL_ID])][[TRIAL_ID, STEP, metric]].rename(columns={metric: "value"})
    rows: list[dict] = []
    group_by = [panel, series] if panel else [series]
    for key, group in picked.groupby(group_by, sort=True):
        panel_value, series_value = key if panel else (None, key[0])
        own = values[values[TRIAL_ID].isin(group[TRIAL_ID])]
        rows += _mean_rows(own, panel_value, series_value, is_geometric(metric))
        rows += _seed_rows(own, group, panel_value, series_value)
        rows += _end_rows(own, group, panel_value, series_value)
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS)), chosen


def solve_heatmap(trials: pd.DataFrame) -> tuple[pd.DataFrame, Slice]:
    """Median steps to solve over seeds per (cell, digits, lr, layers), with its range over seeds (low/high: the
    fewest and most steps, +inf high when a seed never solved); unsolved medians are NaN. Unfinished trials of a
    partial sweep are left out: not solved *yet* is not "never solves"."""
    chosen = hold_fixed(trials, ("cell", "digits", "lr", "layers"))
    picked = select(trials, chosen.fixed)
    open_trials = picked["stop_reason"].isin(UNFINISHED)
    if open_trials.any():
        chosen.notes.append(f"{int(open_trials.sum())} unfinished trials (running or error) left out; squares with none finished are blank")
        picked = picked[~open_trials]
    rows = []
    for (cell, digits, lr, layers), group in picked.groupby(["cell", "digits", "lr", "layers"], sort=True):
        solve = steps_to_solve(group)
        median = float(np.median(solve))
        rows.append(dict(cell=cell, digits=digits, lr=lr, layers=layers,
                         median_steps_to_solve=median if np.isfinite(median) else np.nan,
                         low=float(solve.min()), high=float(solve.max()), n_solved=int(np.isfinite(solve).sum()),
                         n_seeds=len(solve), band="range"))
    frame = pd.DataFrame(rows, columns=list(HEATMAP_COLUMNS))
    # A cell type run at a single (lr, layers) per length has no map to draw; fig 8 and the claims cover it.
    squares = frame.groupby(["cell", "digits"]).size().groupby("cell").max()
    single = [c for c in squares.index if squares[c] < 2]
    if single and len(single) < len(squares):
        chosen.notes.append(f"cells {single} left out: run at one (lr, layers) per digit length only")
        frame = frame[~frame["cell"].isin(single)].reset_index(drop=True)
    return frame, chosen


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def difference_band(a, b) -> tuple[float, float, float, str]:
    """(mean(a) - mean(b), low, high, band): a seeded 95% percentile bootstrap that resamples a and b independently
    (scipy.stats.bootstrap); "none" when either side has a single value, which leaves nothing to resample."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    centre = float(_mean_difference(a, b))
    if min(len(a), len(b)) < 2:
        return centre, np.nan, np.nan, "none"
    result = scipy_stats.bootstrap((a, b), _mean_difference, paired=False, vectorized=True, n_resamples=DIFFERENCE_RESAMPLES,
                                   confidence_level=CONFIDENCE, method="percentile",
                                   rng=np.random.default_rng(DIFFERENCE_SEED))
    return centre, float(result.confidence_interval.low), float(result.confidence_interval.high), "bootstrap95"


def cell_differences(history: pd.DataFrame, trials: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, Slice]:
    """Fig 8: per digit length (panel) and step, the difference between two cells' mean over seeds of `metric`
    (of log10 `metric` for a loss: the log10 of the ratio of geometric means), for each pair of CELL_PAIRS the sweep
    ran, with difference_band's interval. Factors other than cell and digits are held as the other figures hold them."""
    chosen = hold_fixed(trials, ("cell", "digits"))
    picked = select(trials, chosen.fixed)
    values = history[history[TRIAL_ID].isin(picked[TRIAL_ID])]  # history carries each trial's config columns
    geometric = is_geometric(metric)
    rows = []
    for digits, own in values.groupby("digits", sort=True):
        cells = set(own["cell"])
        for a, b in (pair for pair in CELL_PAIRS if set(pair) <= cells):
            for step, at in own.groupby(STEP, sort=True):
                va = _finite(at.loc[at["cell"] == a, metric], geometric)
                vb = _finite(at.loc[at["cell"] == b, metric], geometric)
                if min(len(va), len(vb)) == 0:
                    continue
                diff, low, high, kind = difference_band(va, vb)
                rows.append(dict(panel=digits, pair=f"{a} - {b}", step=step, value=diff, low=low, high=high,
                                 n_a=len(va), n_b=len(vb), band=kind))
    return pd.DataFrame(rows, columns=list(DIFFERENCE_COLUMNS)), chosen


def series_label(factor: str, value) -> str:
    """How a config value is named in legends and claim evidence: '10 digits', 'lr 0.01', '1 layer'."""
    if factor == "digits":
        return f"{int(value)} digits"
    if factor == "layers":
        return f"{int(value)} layer" + ("s" if int(value) != 1 else "")
    if factor == "lr":
        return f"lr {value:g}"
    return str(value)
