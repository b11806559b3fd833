"""The mechanism figure (issue 19): how sure the retrained adders are of each digit along carry chains, and which
layer still holds the carry beyond the trained length, by cell and depth.

    python analysis/mechanism_figure.py data/margins/margins.parquet --out docs/figures/mechanism.png

Reads the rows analysis/mechanism_retrain.py wrote. Top row, one panel per cell: the worst logit margin over 64
carry chains (true digit minus the best other; below 0 the chain is wrong there) against the position in units of
the trained length, the median over adders per depth with its 10-90 % band. Bottom row: per layer, the accuracy of a
linear probe reading the carry from that layer's hidden state at positions beyond the trained length, median over
adders per depth (along a carry chain the carry is 1 at every position past the first, so a layer that has lost it
scores near 0, not 0.5). Right column: the rung predictors (analysis/mechanism_predict.py) against the
ladder. Pure drawing; the numbers it draws are also written as CSV beside the PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import mechanism_predict as predict  # noqa: E402

SHORT = {"predicted": "worst margin,\nextrapolated", "predicted_by_rate": "error-rate\nmodel",
         "predicted_by_forest": "forest\n(out of fold)"}  # the predictors' names in the figure

CELLS = ("RNN", "LSTM", "GRU")
DEPTH_COLOURS = {1: "#1b9e77", 2: "#d95f02", 3: "#7570b3", 4: "#e7298a"}
MULTIPLES = np.geomspace(0.1, 10, 41)  # positions in units of the trained length


def margin_bands(rows: pd.DataFrame) -> pd.DataFrame:
    """Per cell, depth and multiple of the trained length: median and 10-90 % of the worst carry-chain margin."""
    out = []
    for (cell, layers), group in rows.groupby(["cell", "layers"], sort=True):
        at = []
        for row in group.itertuples():
            profile = np.asarray(row.chain_worst_profile, dtype=float)
            positions = np.minimum(np.rint(MULTIPLES * row.digits).astype(int), profile.size - 1)
            at.append(profile[positions])
        at = np.array(at)
        for i, multiple in enumerate(MULTIPLES):
            low, median, high = np.nanpercentile(at[:, i], [10, 50, 90])
            out.append(dict(cell=cell, layers=int(layers), multiple=float(multiple), adders=len(group),
                            median=median, p10=low, p90=high))
    return pd.DataFrame(out)


def layer_carry(rows: pd.DataFrame) -> pd.DataFrame:
    """Per cell, depth and layer: the median (and 10-90 %) carry-probe accuracy beyond the trained length."""
    out = []
    for (cell, layers), group in rows.groupby(["cell", "layers"], sort=True):
        for layer in range(1, int(layers) + 1):
            values = group[f"carry_l{layer}_h_chain_acc_beyond"].astype(float).dropna()
            if values.empty:
                continue
            out.append(dict(cell=cell, layers=int(layers), layer=layer, adders=len(values), median=values.median(),
                            p10=values.quantile(0.1), p90=values.quantile(0.9)))
    return pd.DataFrame(out)


def draw(bands: pd.DataFrame, carry: pd.DataFrame, title: str, predicted: pd.DataFrame | None = None):
    """Margins (top) and the carry per layer (bottom) per cell; with `predicted` (mechanism_predict.predictions),
    a fourth column: the best predictor's confusion table against the recorded ladder and every predictor's share
    on the right rung."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(CELLS) + (predicted is not None)
    fig, axes = plt.subplots(2, columns, figsize=(5 * columns, 8.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * len(CELLS) + [0.9] * (predicted is not None)})
    for row in range(2):
        for j in range(1, len(CELLS)):
            axes[row, j].sharey(axes[row, 0])
    for j, cell in enumerate(CELLS):
        ax = axes[0, j]
        for layers, part in bands[bands["cell"] == cell].groupby("layers"):
            colour = DEPTH_COLOURS.get(int(layers), "grey")
            ax.plot(part["multiple"], part["median"], color=colour, lw=2, label=f"{layers} layer{'s' * (layers > 1)} (n={part['adders'].iloc[0]})")
            ax.fill_between(part["multiple"], part["p10"], part["p90"], color=colour, alpha=0.15, lw=0)
        ax.axhline(0, color="black", lw=0.8)
        ax.axvline(1, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_title(f"{cell}: worst margin along carry chains", fontsize=12)
        ax.set_xlabel("position / trained length", fontsize=11)
        ax.legend(fontsize=9, loc="lower left")
        ax.tick_params(labelsize=10)
        ax = axes[1, j]
        for layers, part in carry[carry["cell"] == cell].groupby("layers"):
            colour = DEPTH_COLOURS.get(int(layers), "grey")
            ax.errorbar(part["layer"] + 0.06 * (layers - 2.5), part["median"],
                        yerr=[part["median"] - part["p10"], part["p90"] - part["median"]], color=colour, marker="o",
                        capsize=3, lw=1.5, label=f"{layers} layer{'s' * (layers > 1)}")
        ax.set_xticks([1, 2, 3, 4])
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{cell}: carry read from each layer's state", fontsize=12)
        ax.set_xlabel("layer (1 = bottom)", fontsize=11)
        ax.legend(fontsize=9, loc="lower left")
        ax.tick_params(labelsize=10)
    if predicted is not None:
        draw_predictors(axes[0, -1], axes[1, -1], predicted)
    axes[0, 0].set_ylabel("worst logit margin (median, 10-90 %)", fontsize=11)
    axes[1, 0].set_ylabel("carry-probe accuracy on chains\nbeyond the trained length", fontsize=11)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig


def title(rows: pd.DataFrame) -> str:
    digits = ", ".join(str(d) for d in sorted(rows["digits"].unique()))
    return f"{len(rows)} adders (trained on {digits} digits): margins, where the carry lives, the rung predicted"


def predictions(rows: pd.DataFrame) -> pd.DataFrame:
    """The rung predictors' out-of-fold predictions (the forest needs one config per fold at least)."""
    configs = rows[list(predict.CONFIG)].drop_duplicates().shape[0]
    return predict.predictions(rows, forest=configs >= predict.FOREST_FOLDS)


def draw_predictors(table_ax, bars_ax, predicted: pd.DataFrame) -> None:
    """The forest's (else the error-rate model's) confusion table against the recorded ladder, and each
    predictor's share on the right rung against the recorded and the retrained ladder."""
    best = "predicted_by_forest" if "predicted_by_forest" in predicted else "predicted_by_rate"
    found = predict.agreement(predicted[best], predicted["recorded"])
    counts = found["confusion"].to_numpy()
    labels = ["fails 100", "100", "1,000", "10,000"]
    table_ax.imshow(np.log1p(counts), cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        table_ax.text(j, i, str(n), ha="center", va="center", fontsize=11,
                      color="white" if np.log1p(n) > 0.6 * np.log1p(counts.max()) else "black")
    table_ax.set_xticks(range(4), labels, fontsize=10)
    table_ax.set_yticks(range(4), labels, fontsize=10)
    table_ax.set_xlabel("predicted rung (from positions up to 3x)", fontsize=11)
    table_ax.set_ylabel("measured carry-chain rung (recorded)", fontsize=11)
    table_ax.set_title(f"{SHORT[best].replace(chr(10), ' ')}: {found['right']:.1%} of {found['n']} adders\non the right rung", fontsize=12)
    ladders = [ladder for ladder in ("recorded", "retrained") if ladder in predicted]
    names = [c for c in SHORT if c in predicted]
    for k, ladder in enumerate(ladders):
        shares = [predict.agreement(predicted[c], predicted[ladder])["right"] for c in names]
        y = np.arange(len(names)) + 0.38 * (k - (len(ladders) - 1) / 2)
        bars_ax.barh(y, shares, height=0.36, label=f"against the {ladder} ladder", color=["#555555", "#aaaaaa"][k])
        for yy, share in zip(y, shares):
            bars_ax.text(share + 0.01, yy, f"{share:.1%}", va="center", fontsize=10)
    bars_ax.axvline(0.85, color="#d95f02", ls="--", lw=1.2, label="the 85 % aimed for")
    bars_ax.set_yticks(range(len(names)), [SHORT[c] for c in names], fontsize=10)
    bars_ax.set_xlim(0.5, 1.2)
    bars_ax.set_xticks([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    bars_ax.set_xlabel("share of adders on the right rung", fontsize=11)
    bars_ax.set_title("rung predictors", fontsize=12)
    bars_ax.legend(fontsize=8.5, loc="upper right")
    bars_ax.set_ylim(len(names) - 0.4, -1.7)  # top down, with room for the legend above the bars


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("margins", type=Path, help="the parquet analysis/mechanism_retrain.py wrote")
    p.add_argument("--out", type=Path, default=Path("results/mechanism.png"), help="the PNG (CSVs go beside it)")
    args = p.parse_args(argv)
    if not args.margins.is_file():
        p.exit(2, f"mechanism_figure.py: error: {args.margins} is not a file; give the margins parquet\n")
    rows = pd.read_parquet(args.margins)
    bands, carry = margin_bands(rows), layer_carry(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bands.to_csv(args.out.with_name(args.out.stem + "_margins.csv"), index=False)
    carry.to_csv(args.out.with_name(args.out.stem + "_carry.csv"), index=False)
    fig = draw(bands, carry, title(rows), predictions(rows))
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
