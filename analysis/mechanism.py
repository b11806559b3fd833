"""Issue 19's measurements as part of the study's analysis: every adder's margin summary as columns beside its
trial row (adders.csv) and a report section (margins by cell x depth, the rung predictors against the ladder, the
carry per layer). Pure: frames in, frames and markdown out; plot_convergence.py writes them.

The margins come from analysis/mechanism_retrain.py (one row per adder, keyed by trial_id); adders it has not
measured keep empty margin columns and `margins_measured` False, so a partial run shows as partial.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import mechanism_predict as predict

# The per-adder summary added to the study's trial rows (profiles and per-position lists stay in the parquet).
SUMMARY_COLUMNS = (
    "weights", "retrain_matched", "retrained_generalises_to",
    "chain_plateau_margin", "chain_decay_per_decade", "chain_min_margin", "chain_trained_min_margin",
    "chain_first_wrong_min", "chain_first_wrong_median", "chain_exact_match",
    "uniform_plateau_margin", "uniform_decay_per_decade", "uniform_min_margin", "uniform_first_wrong_min",
    "uniform_exact_match", "chain_length",
)
NEEDED = ("trial_id", "digits", "cell", "layers", "lr", "chain_worst_profile", "chain_median_profile", "chains",
          predict.GATE)
PREDICTORS = {"predicted": "extrapolated worst margin", "predicted_by_rate": "error-rate model",
              "predicted_by_forest": "forest on the window (out of fold)"}

RUNG_COLUMNS = {"predicted": "predicted_rung_worst_margin", "predicted_by_rate": "predicted_rung_error_rate",
                "predicted_by_forest": "predicted_rung_forest", "recorded": "recorded_rung",
                "retrained": "retrained_rung"}  # their names in adders.csv


class MarginsError(ValueError):
    """A margins file that cannot be read as analysis/mechanism_retrain.py's output."""


def read_margins(paths: list[Path]) -> pd.DataFrame:
    """The margins parquet(s) as one frame, one row per adder (the first file's row where several have it);
    a file missing, unreadable, or without the columns the analysis needs is a MarginsError naming it."""
    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise MarginsError(f"--margins {path}: no such file (give the parquet analysis/mechanism_retrain.py wrote)")
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several kinds for a file that is not parquet
            raise MarginsError(f"--margins {path}: not a parquet file ({type(err).__name__})") from None
        missing = [c for c in NEEDED if c not in frame]
        if missing:
            raise MarginsError(f"--margins {path}: column {missing[0]} missing: not analysis/mechanism_retrain.py's output")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).drop_duplicates("trial_id", keep="first").reset_index(drop=True)


def carry_summary(margins: pd.DataFrame) -> pd.DataFrame:
    """Per adder: the carry probe's accuracy on carry chains beyond the trained length at its worst layer, and the
    first layer (1 = bottom) where it is 0.9 or less (NaN: every layer keeps it)."""
    layers = sorted({int(c.split("_")[1][1:]) for c in margins if c.startswith("carry_l") and c.endswith("_h_chain_acc_beyond")})
    acc = pd.DataFrame({k: margins.get(f"carry_l{k}_h_chain_acc_beyond") for k in layers}, index=margins.index)
    lost = acc.le(0.9)
    first = lost.idxmax(axis=1).where(lost.any(axis=1))
    return pd.DataFrame({"carry_worst_layer_acc_beyond": acc.min(axis=1), "carry_first_layer_lost": first})


def adder_table(trials: pd.DataFrame, margins: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """The study's trial rows with each adder's margin summary, carry summary and predicted rungs beside them."""
    extra = margins.reindex(columns=["trial_id", *SUMMARY_COLUMNS]).join(carry_summary(margins)).join(
        predicted[[c for c in (*PREDICTORS, "recorded", "retrained") if c in predicted]].rename(columns=RUNG_COLUMNS))
    table = trials.merge(extra, on="trial_id", how="left", validate="one_to_one")
    table.insert(1, "margins_measured", table["trial_id"].isin(set(margins["trial_id"])))
    return table


def section(margins: pd.DataFrame, predicted: pd.DataFrame, study_adders: int, figure: str | None) -> str:
    """Markdown: coverage, the margins by cell x depth, each predictor against each ladder, the forest's confusion
    table, and the carry probe per layer."""
    by_length = margins.groupby("digits").size()
    lines = ["## How the adders do it: margins, the rung predictors, the carry per layer (issue 19)", "",
             f"{len(margins)} of the study's {study_adders} adders measured ("
             + ", ".join(f"{n} trained on {d} digits" for d, n in by_length.items()) + "); their summaries are columns "
             "of adders.csv (empty where not measured).", ""]
    if figure:
        lines += [f"![margins and carry probes]({figure})", ""]
    lines += ["### Right rung on the carry-chain ladder (fails 100 / 100 / 1,000 / 10,000), from positions up to "
              f"{predict.HORIZON}x the trained length", "", "| predictor | against | adders | right rung | Spearman |",
              "|---|---|---|---|---|"]
    for column, name in PREDICTORS.items():
        for ladder in ("recorded", "retrained"):
            if column in predicted and ladder in predicted:
                found = predict.agreement(predicted[column], predicted[ladder])
                lines.append(f"| {name} | {ladder} ladder | {found['n']} | {found['right']:.1%} | {found['spearman']:.3f} |")
    n, retest = predict.retest_agreement(margins)
    if n:
        lines += ["", f"The ladder measured again on the same weights with other chains agrees at its first rung on "
                      f"{retest:.1%} of {n} adders: a ceiling for any predictor."]
    if "predicted_by_forest" in predicted:
        found = predict.agreement(predicted["predicted_by_forest"], predicted["recorded"])
        table = found["confusion"].rename(index=lambda r: f"measured {r}", columns=lambda c: f"pred {c}")
        lines += ["", "The forest against the recorded ladder:", "", predict.markdown(table.rename_axis(None, axis=1))]
    lines += ["", "### Worst margin along carry chains at multiples of the trained length (median [10 %, 90 %])", "",
              predict.markdown(predict.margin_by_depth(margins), index=False), "",
              "### The carry read from each layer's state beyond the trained length (logistic probe)", "",
              predict.markdown(predict.carry_by_layer(margins), index=False), "",
              "The same pooled over cells, hidden state, bottom layer first (top_below_bottom: the share of adders whose "
              "top layer reads the carry worse than their bottom one):", "",
              predict.markdown(predict.carry_by_depth(margins), index=False, digits=2), ""]
    return "\n".join(lines)

