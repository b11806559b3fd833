"""Predict each adder's carry-chain rung (100 / 1,000 / 10,000 digits) from its margin profile up to 3x the trained
length, and check the prediction against the measured ladder (issue 19 item 2); also the per-layer carry probe.

    python analysis/mechanism_predict.py ~/runs/margins/margins.parquet

Reads the rows analysis/mechanism_retrain.py wrote. A rung is "passed" as tune_adder.generalisation has it (exact
match >= 0.99, NaN = not probed = fail); the measured rung is the top of the unbroken run of passes from 100 digits,
0 if 100 fails. Prints markdown: share on the right rung, the confusion table and Spearman's rho, against the
ladder the study recorded and against the retrained adder's own ladder (the same adder the margins describe).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tune_adder import generalisation, metrics  # noqa: E402

RUNGS = (0,) + metrics.PROBE_LADDER  # 0: fails the first rung
HORIZON = 3  # the predictor sees positions up to HORIZON x the trained length
THRESHOLD = 0.0  # a rung is predicted to pass while the extrapolated worst margin stays above this


def measured_rung(row: pd.Series | dict, prefix: str = "") -> int:
    """The top rung of the unbroken run of carry-chain passes from the bottom of the ladder; 0 if the first fails."""
    rung = 0
    for length in metrics.PROBE_LADDER:
        if not generalisation.passes(row.get(f"{prefix}{metrics.probe_column('carry_chain', length)}")):
            break
        rung = length
    return rung


def window(worst_profile, digits: int, horizon: int = HORIZON) -> np.ndarray:
    """The worst margins at positions digits+1 .. horizon*digits: beyond the trained sums, within the horizon."""
    return np.asarray(worst_profile, dtype=np.float64)[digits + 1 : horizon * digits + 1]


def predicted_rung(worst_profile, digits: int, horizon: int = HORIZON, threshold: float = THRESHOLD) -> int:
    """Extrapolate the worst margin seen up to horizon x digits to each rung, and predict the rung passes while it
    stays above `threshold`.

    The level is the lowest worst margin in the window (a chain already wrong there fails at once); the trend is
    the least-squares slope against log10(position + 1) over the window, counted only when negative (a margin
    that grows is not extrapolated upwards): margin(L) = level + min(slope, 0) * (log10(L + 1) - log10(end + 1)).
    """
    w = window(worst_profile, digits, horizon)
    level = float(w.min())
    start = digits + 1
    x = np.log10(np.arange(start, start + w.size) + 1.0)
    slope = float(np.polyfit(x, w, 1)[0]) if w.size >= 2 else 0.0
    end = np.log10(horizon * digits + 1.0)
    rung = 0
    for length in metrics.PROBE_LADDER:
        if level + min(slope, 0.0) * (np.log10(length + 1.0) - end) <= threshold:
            break
        rung = length
    return rung


def predicted_rung_by_error_rate(worst_profile, median_profile, digits: int, horizon: int = HORIZON,
                                 need: float = generalisation.PASS_EXACT_MATCH, chains: int = 64) -> int:
    """A second predictor: an error rate per position from the margins' spread, compounded over a rung's length.

    At each position of the window the margins over the `chains` rows are read as normal, with mean ~ the median
    and sd ~ (median - worst) / z, z the expected minimum of `chains` standard normals (Blom); the mean error
    probability p over the window gives a chain of length L an exact match of (1 - p) ** L, and a rung passes
    while that is >= need (0.99, the ladder's pass mark). No trend: the window's rate is assumed to hold on.
    """
    from scipy.stats import norm

    worst, median = window(worst_profile, digits, horizon), window(median_profile, digits, horizon)
    z = -norm.ppf((1 - 0.375) / (chains + 0.25))
    sd = np.maximum((median - worst) / z, 1e-3)
    p = float(norm.cdf(-median / sd).mean())
    rung = 0
    for length in metrics.PROBE_LADDER:
        if length * np.log1p(-min(p, 1 - 1e-12)) < np.log(need):
            break
        rung = length
    return rung


FOREST_FOLDS = 10  # folds of the forest's cross-validation, whole configs per fold
CONFIG = ("digits", "cell", "layers", "lr")  # the study's factors: an adder's config is these (seeds vary)
# The rules, the forest's features and its settings were chosen looking at the first 333 rows of
# data/margins/margins.parquet (rows are kept in the order they were measured); rows after them are data none of
# the predictors' design has seen: fresh_rows scores the predictors there, the forest fitted on the earlier rows only.
DESIGNED_ON = 333


def window_features(row: pd.Series, horizon: int = HORIZON) -> dict:
    """What an adder shows up to horizon x its trained length L, as numbers a classifier can weigh: along the 64
    carry chains, the worst margin's minimum, 10 % quantile, mean, last value and slope against log10(position)
    over positions L+1 .. horizon*L; the median margin's minimum, mean and slope; the mean gap between median and
    worst; the share of chains already wrong by horizon*L; along the uniform sums the worst margin's minimum and
    slope and the median's mean; the worst carry-chain margin within the trained length; the adder's own last
    carry-chain evaluation at its trained length (the gate); and the per-layer carry probe's accuracy over the
    window, worst layer (minimum, and mean of the last five positions; NaN where no probe was fitted)."""
    digits = int(row["digits"])
    cut = lambda name: np.asarray(row[name], dtype=np.float64)[digits + 1 : horizon * digits + 1]  # noqa: E731
    worst, median = cut("chain_worst_profile"), cut("chain_median_profile")
    u_worst, u_median = cut("uniform_worst_profile"), cut("uniform_median_profile")
    x = np.log10(np.arange(digits + 1, digits + 1 + worst.size) + 1.0)
    slope = lambda y: float(np.polyfit(x, y, 1)[0]) if y.size >= 2 else 0.0  # noqa: E731
    first_wrong = np.asarray(row["chain_first_wrong"], dtype=np.float64)
    probes = [np.asarray(row[c], dtype=np.float64)[digits : horizon * digits] for c in row.index
              if c.endswith("_chain_acc_profile") and isinstance(row[c], (list, np.ndarray))]
    return {"worst_min": worst.min(), "worst_q10": np.quantile(worst, 0.1), "worst_mean": worst.mean(),
            "worst_last": worst[-1], "worst_slope": slope(worst), "median_min": median.min(),
            "median_mean": median.mean(), "median_slope": slope(median), "spread": float((median - worst).mean()),
            "wrong_share": float(np.mean(np.nan_to_num(first_wrong, nan=np.inf) <= horizon * digits)),
            "uniform_worst_min": u_worst.min(), "uniform_worst_slope": slope(u_worst), "uniform_median_mean": u_median.mean(),
            "trained_min": row["chain_trained_min_margin"], "gate": row[GATE],
            "probe_min": min(p.min() for p in probes) if probes else np.nan,
            "probe_last": min(p[-5:].mean() for p in probes) if probes else np.nan}


def window_table(frame: pd.DataFrame, horizon: int = HORIZON) -> pd.DataFrame:
    """window_features of every row, one row per adder (same index)."""
    return pd.DataFrame([window_features(r, horizon) for _, r in frame.iterrows()], index=frame.index)


def _forest(seed: int = 0):
    """The one forest both checks fit: sklearn's RandomForestClassifier, 300 trees, leaves of 3 or more."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=300, min_samples_leaf=3, random_state=seed)


def _forest_inputs(features: pd.DataFrame) -> np.ndarray:
    return features.fillna(-1.0).to_numpy()  # NaN features (no probe fitted) read as -1


def out_of_fold(features: pd.DataFrame, target, groups, folds: int = FOREST_FOLDS, seed: int = 0) -> np.ndarray:
    """Each row's class predicted by a random forest fitted on the other folds only, the rows of a group (an
    adder's config: its seeds) always in one fold, so no prediction was fitted on a seed of its own config.
    _forest() and GroupKFold; NaN features read as -1."""
    from sklearn.model_selection import GroupKFold, cross_val_predict

    return cross_val_predict(_forest(seed), _forest_inputs(features), np.asarray(target),
                             groups=np.asarray(groups), cv=GroupKFold(n_splits=folds))


def agreement(predicted: pd.Series, measured: pd.Series) -> dict:
    """Share on the right rung, Spearman's rho (NaN when either side is constant) and the confusion table."""
    right = float((predicted == measured).mean())
    rho = stats.spearmanr(predicted, measured).statistic if predicted.nunique() > 1 and measured.nunique() > 1 else math.nan
    table = pd.crosstab(measured.rename("measured"), predicted.rename("predicted")).reindex(
        index=list(RUNGS), columns=list(RUNGS), fill_value=0)
    return {"n": int(len(predicted)), "right": right, "spearman": float(rho), "confusion": table}


def retest_agreement(frame: pd.DataFrame) -> tuple[int, float]:
    """How reproducible the ladder's first rung is on the same weights: for adders whose margin chains are exactly
    the first rung's length (10x a 10-digit length = 100 digits; 64 other chains), the share whose pass or fail
    there equals the retrained ladder's at 100 digits. (adders, share); (0, nan) if none."""
    first = metrics.PROBE_LADDER[0]
    rows = frame[(frame["chain_length"] == first) & frame["retrained_probe_carry_chain_100"].notna()] \
        if "chain_length" in frame and "retrained_probe_carry_chain_100" in frame else frame.iloc[:0]
    if rows.empty:
        return 0, math.nan
    same = rows["chain_exact_match"].map(generalisation.passes) == rows[f"retrained_{metrics.probe_column('carry_chain', first)}"].map(generalisation.passes)
    return len(rows), float(same.mean())


def fade_position(acc_profile) -> float:
    """The first position whose carry-in the layer's probe gets wrong on half the chains or more (the profile's
    entry i is position i + 1); the chain's length + 1 if none: censored."""
    acc = np.asarray(acc_profile, dtype=np.float64)
    below = np.flatnonzero(acc <= 0.5)
    return float(below[0] + 1) if below.size else float(acc.size + 1)


def carry_by_layer(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean over adders, per trained length x cell x depth x whether the adder's recorded carry-chain rung is the top one, and per
    layer (and state), of the carry probe's accuracy and median margin along carry chains beyond the trained length,
    and its accuracy on uniform sums beyond it; and the median fade position (fade_position; censored at the chain's
    length + 1, 10x the trained length + 1)."""
    rows = []
    top = frame.apply(measured_rung, axis=1).eq(metrics.PROBE_LADDER[-1]).rename("reaches_top")
    for (digits, cell, layers, reaches), group in frame.groupby(["digits", "cell", "layers", top]):
        for k in range(1, int(layers) + 1):
            for state in ("h", "c"):
                name = f"carry_l{k}_{state}"
                if f"{name}_chain_acc_beyond" not in group or group[f"{name}_chain_acc_beyond"].isna().all():
                    continue
                rows.append({"digits": digits, "cell": cell, "layers": layers, "reaches_10000": reaches, "layer": k, "state": state, "adders": len(group),
                             "chain_acc_beyond": group[f"{name}_chain_acc_beyond"].mean(),
                             "chain_margin_median_beyond": group[f"{name}_chain_margin_median_beyond"].median(),
                             "uniform_acc_beyond": group[f"{name}_uniform_acc_beyond"].mean(),
                             "fade_position_median": group[f"{name}_chain_acc_profile"].map(fade_position).median()})
    return pd.DataFrame(rows)


def carry_by_depth(frame: pd.DataFrame) -> pd.DataFrame:
    """Per trained length x depth (2 layers or more) x whether the adder reaches the top rung (recorded ladder),
    pooled over cells: the mean over adders of the carry probe's accuracy along chains beyond the trained length at
    each layer's hidden state (bottom first), and the share of adders whose top layer reads the carry worse than
    their bottom one. A carry lost a little at each layer would show as accuracy falling layer by layer, and a
    share near 1."""
    rows = []
    reaches = frame.apply(measured_rung, axis=1).eq(metrics.PROBE_LADDER[-1]).rename("reaches_10000")
    for (digits, layers, top), group in frame[frame["layers"] >= 2].groupby(["digits", "layers", reaches]):
        acc = [group[f"carry_l{k}_h_chain_acc_beyond"] for k in range(1, int(layers) + 1)]
        rows.append({"digits": digits, "layers": layers, "reaches_10000": top, "adders": len(group),
                     "acc_by_layer": " / ".join(f"{a.mean():.2f}" for a in acc),
                     "top_below_bottom": float((acc[-1] < acc[0]).mean())})
    return pd.DataFrame(rows)


def margin_by_depth(frame: pd.DataFrame, multiples: tuple[int, ...] = (1, 2, 3, 5, 10)) -> pd.DataFrame:
    """Median over adders (and the 10-90 % spread) of the worst carry-chain margin at multiples m of the trained
    length L (position m * L - 1: the top operand digit of an m * L-digit chain), per trained length x cell x depth."""
    rows = []
    for (digits, cell, layers), group in frame.groupby(["digits", "cell", "layers"]):
        row = {"digits": digits, "cell": cell, "layers": layers, "adders": len(group)}
        for m in multiples:
            at = group["chain_worst_profile"].map(lambda p: p[m * digits - 1] if m * digits < len(p) else np.nan)
            row[f"{m}x"] = f"{at.median():.2f} [{at.quantile(0.1):.1f}, {at.quantile(0.9):.1f}]"
        rows.append(row)
    return pd.DataFrame(rows)


GATE = "retrained_final_carry_chain_exact_match"  # the retrained adder's last evaluation, at its trained length


def predictions(frame: pd.DataFrame, horizon: int = HORIZON, threshold: float = THRESHOLD, gate: bool = True,
                forest: bool = False) -> pd.DataFrame:
    """Both predictors' rungs and the measured ones. With `gate`, an adder whose own last training evaluation of
    carry chains at the trained length (256 chains, the top carry included) is below the pass mark is predicted 0:
    the margin window (positions beyond the trained length, inside a longer chain) never sees a chain's top digit."""
    out = frame[["experiment", "trial_id", "digits", "cell", "layers", "lr", "seed"]].copy()
    out["predicted"] = [predicted_rung(p, int(d), horizon, threshold) for p, d in zip(frame["chain_worst_profile"], frame["digits"])]
    out["predicted_by_rate"] = [predicted_rung_by_error_rate(w, m, int(d), horizon, chains=int(c)) for w, m, d, c in
                                zip(frame["chain_worst_profile"], frame["chain_median_profile"], frame["digits"], frame["chains"])]
    if gate:
        passes_trained = frame[GATE].map(generalisation.passes).to_numpy()
        for name in ("predicted", "predicted_by_rate"):
            out[name] = out[name].where(passes_trained, 0)
    out["recorded"] = [measured_rung(r) for _, r in frame.iterrows()]
    if "retrained_probe_carry_chain_100" in frame:
        out["retrained"] = [measured_rung(r, "retrained_") for _, r in frame.iterrows()]
    if forest:  # fitted on the ladder of the adder the margins describe: the retrained one where it was measured
        features = window_table(frame, horizon)
        groups = frame[list(CONFIG)].astype(str).agg("|".join, axis=1)
        out["predicted_by_forest"] = out_of_fold(features, out.get("retrained", out["recorded"]), groups)
    return out


def fresh_rows(frame: pd.DataFrame, designed_on: int = DESIGNED_ON, horizon: int = HORIZON) -> pd.DataFrame:
    """predictions() for the rows from `designed_on` on, with the forest fitted on the rows before it only (their
    retrained ladder) and none of theirs: a held-out check of predictors designed on the earlier rows. Empty if
    there are no such rows."""
    if len(frame) <= designed_on:
        return predictions(frame.iloc[:0], horizon)
    seen, fresh = frame.iloc[:designed_on], frame.iloc[designed_on:]
    found = predictions(fresh, horizon)
    prefix = "retrained_" if "retrained_probe_carry_chain_100" in seen else ""  # the ladder predictions() fits on
    target = [measured_rung(r, prefix) for _, r in seen.iterrows()]
    forest = _forest().fit(_forest_inputs(window_table(seen, horizon)), target)
    found["predicted_by_forest"] = forest.predict(_forest_inputs(window_table(fresh, horizon)))
    return found


def markdown(frame: pd.DataFrame, index: bool = True, digits: int = 3) -> str:
    """A pipe table (pandas' to_markdown needs tabulate, which this project does not depend on)."""
    frame = frame.reset_index() if index else frame
    cell = lambda v: f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _report(name: str, found: dict) -> str:
    table = found["confusion"].rename(index=lambda r: f"measured {r}", columns=lambda c: f"pred {c}")
    return (f"### against the {name} ladder: {found['n']} adders, right rung {found['right']:.1%}, "
            f"Spearman rho {found['spearman']:.3f}\n\n{markdown(table.rename_axis(None, axis=1))}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("margins", help="the parquet analysis/mechanism_retrain.py wrote")
    p.add_argument("--horizon", type=int, default=HORIZON, help="x the trained length the predictor sees (default %(default)s)")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="margin a passing rung keeps (default %(default)s)")
    p.add_argument("--no-gate", dest="gate", action="store_false",
                   help="do not predict 0 for adders that fail carry chains at their trained length")
    p.add_argument("--rows", help="only rows START:END of the file (in the order they were measured), e.g. 225:")
    args = p.parse_args(argv)
    frame = pd.read_parquet(Path(args.margins).expanduser())
    if args.rows:
        start, _, end = args.rows.partition(":")
        frame = frame.iloc[int(start or 0) : int(end) if end else None]
    found = predictions(frame, args.horizon, args.threshold, args.gate, forest=True)
    gate = f"gated on {GATE} >= {generalisation.PASS_EXACT_MATCH}" if args.gate else "not gated"
    print(f"## Carry-chain rung predicted from the worst margin up to {args.horizon}x the trained length "
          f"(threshold {args.threshold:g}, {gate}); {len(frame)} adders\n")
    for name in ("recorded", "retrained"):
        if name in found:
            print(_report(name, agreement(found["predicted"], found[name])))
    print("## The same from the error-rate model (predicted_rung_by_error_rate)\n")
    for name in ("recorded", "retrained"):
        if name in found:
            print(_report(name, agreement(found["predicted_by_rate"], found[name])))
    print(f"## The same from a random forest on the window's features (window_features; out of fold: {FOREST_FOLDS} "
          "folds of whole configs, fitted on the retrained ladder)\n")
    for name in ("recorded", "retrained"):
        if name in found:
            print(_report(name, agreement(found["predicted_by_forest"], found[name])))
    if not args.rows:
        fresh = fresh_rows(frame, DESIGNED_ON, args.horizon)
        if len(fresh):
            print(f"## Held out: rows {DESIGNED_ON} on, {len(fresh)} adders (in data/margins/margins.parquet the ones measured "
                  f"after the predictors were designed), the forest fitted on the {DESIGNED_ON} rows before them\n")
            for label, column in (("extrapolated worst margin", "predicted"), ("error rate", "predicted_by_rate"),
                                  ("forest", "predicted_by_forest")):
                for name in ("recorded", "retrained"):
                    if name in fresh:
                        found_here = agreement(fresh[column], fresh[name])
                        print(f"- {label}, against the {name} ladder: right rung {found_here['right']:.1%}, Spearman rho "
                              f"{found_here['spearman']:.3f}")
            print("\n" + _report("recorded", agreement(fresh["predicted_by_forest"], fresh["recorded"]))
                  .replace("### against", "### forest, held out, against"))
    print("## Right rung by experiment (recorded ladder): extrapolated worst margin / error rate / forest\n")
    right = found.assign(worst=found["predicted"] == found["recorded"], rate=found["predicted_by_rate"] == found["recorded"],
                         forest=found["predicted_by_forest"] == found["recorded"])
    table = right.groupby(["experiment", "digits"]).agg(adders=("worst", "size"), worst=("worst", "mean"), rate=("rate", "mean"),
                                                        forest=("forest", "mean"))
    print(markdown(table) + "\n")
    n, retest = retest_agreement(frame)
    if n:
        print(f"The ladder measured again on the same weights with other chains: at {metrics.PROBE_LADDER[0]} digits, "
              f"{retest:.1%} of {n} adders pass or fail alike (a ceiling for any predictor of the measured rung).\n")
    if "retrained" in found:
        same = (found["recorded"] == found["retrained"]).mean()
        print(f"Recorded and retrained ladders on the same rung: {same:.1%} "
              f"(retrained evaluations matched the history bit for bit for {frame['retrain_matched'].mean():.1%}).\n")
    print("### right rung (recorded ladder) by cell x depth: extrapolated worst margin / error rate / forest\n")
    print(markdown(right.groupby(["cell", "layers"]).agg(adders=("worst", "size"), worst=("worst", "mean"),
                                                         rate=("rate", "mean"), forest=("forest", "mean"))) + "\n")
    print("### worst margin along carry chains at multiples of the trained length: median [10 %, 90 %] over adders\n")
    print(markdown(margin_by_depth(frame), index=False) + "\n")
    print("### carry probe per layer (fitted on uniform sums of the trained length)\n")
    print(markdown(carry_by_layer(frame), index=False) + "\n")
    print("### carry probe per layer, pooled over cells (hidden state; bottom layer first)\n")
    print(markdown(carry_by_depth(frame), index=False, digits=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
