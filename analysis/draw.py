"""Drawing: each function takes a tidy frame from analysis.extract and a matplotlib ax (or builds a figure of axes)."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, ScalarFormatter  # noqa: E402

from tune_adder.metrics import STEP  # noqa: E402

from analysis.extract import series_label  # noqa: E402

METRIC_LABELS = {
    "train_loss": "train loss (cross-entropy per digit, nats)",
    "val_loss": "validation loss (cross-entropy per digit, nats)",
    "val_exact_match": "validation exact match (share of sums)",
}
PLAIN = FuncFormatter(lambda value, _: f"{value:g}")  # 0.01, not 10^-2 or 1x10^-2
STEP_LABEL = "training step (one batch per step)"
END_MARKERS = {  # how a curve that ended early is marked
    "early_stopped": dict(marker="x", s=45, label="cut short by ASHA"),
    "solved": dict(marker="o", s=40, facecolors="none", label="stopped when solved"),
    "diverged": dict(marker="X", s=70, color="red", label="diverged (non-finite loss)"),
    "error": dict(marker="s", s=40, color="black", label="trial error"),
    "running": dict(marker=">", s=40, label="unfinished (partial sweep)"),
}


CELL_ORDER = ("RNN", "LSTM", "GRU")  # the seed's order


def series_order(values) -> list:
    """Sorted series values; cells in the seed's order RNN, LSTM, GRU."""
    return sorted(values, key=lambda v: (CELL_ORDER.index(v), "") if v in CELL_ORDER else (len(CELL_ORDER), v))


def series_colors(values) -> dict:
    cmap = plt.get_cmap("tab10")
    return {v: cmap(i % 10) for i, v in enumerate(series_order(values))}


def _wrap(title: str, width_inches: float) -> str:
    """Wrap each title line to the figure's width (about 9 characters an inch at the default size)."""
    return "\n".join(textwrap.fill(line, max(30, int(width_inches * 9))) for line in title.split("\n"))


SEED_LINE = dict(lw=0.8, alpha=0.45)  # each seed's own curve: thin and light, under the mean
MEAN_LINE = dict(lw=2.4)
BAND_ALPHA = 0.12


def draw_curves(ax, frame: pd.DataFrame, metric: str, factor: str, colors: dict) -> None:
    """One panel: per series each seed's curve (thin), the mean over seeds (thick) and its band, and markers where
    single trials ended early."""
    for (value, _), curve in frame[frame["kind"] == "seed"].groupby(["series", "seed"], sort=True):
        ax.plot(curve[STEP], curve["value"], color=colors[value], **SEED_LINE)
    for value, curve in frame[frame["kind"] == "mean"].groupby("series", sort=True):
        curve = curve.sort_values(STEP)
        color = colors[value]
        banded = curve[curve["band"] != "none"]
        if not banded.empty:
            ax.fill_between(banded[STEP], banded["low"], banded["high"], color=color, alpha=BAND_ALPHA, lw=0)
        ax.plot(curve[STEP], curve["value"], color=color, label=series_label(factor, value), **MEAN_LINE)
    for kind, style in END_MARKERS.items():
        ends = frame[frame["kind"] == kind]
        for value, points in ends.groupby("series"):
            marker = {k: v for k, v in style.items() if k != "label"}
            colour_key = "edgecolors" if marker.get("facecolors") == "none" else "color"
            marker.setdefault(colour_key, colors[value])  # diverged/error keep their own colour
            ax.scatter(points[STEP], points["value"], zorder=3, linewidths=1.4, **marker)
    if metric.endswith("loss"):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(PLAIN)
        low, high = ax.get_ylim()
        # Under one decade there may be no major tick at all: label the minor ones instead.
        ax.yaxis.set_minor_formatter(PLAIN if high / low < 10 else NullFormatter())
    else:
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(True, which="major", alpha=0.3)


def _legend_handles(frame: pd.DataFrame, factor: str, colors: dict) -> list:
    handles = [Line2D([], [], color=colors[v], label=series_label(factor, v), **MEAN_LINE) for v in colors]
    if (frame["kind"] == "seed").any():
        handles.append(Line2D([], [], color="0.3", label="single seeds", **SEED_LINE))
    for kind, style in END_MARKERS.items():
        if (frame["kind"] == kind).any():
            face = "none" if style.get("facecolors") == "none" else style.get("color", "grey")
            handles.append(Line2D([], [], ls="", marker=style["marker"], markersize=7, color=style.get("color", "grey"),
                                  markerfacecolor=face, label=style["label"]))
    return handles


def curve_figure(frame: pd.DataFrame, metric: str, factor: str, title: str, band_note: str):
    """All panels of one seed figure (one per digit length, or a single panel), legend below the axes."""
    panels = sorted(frame["panel"].dropna().unique().tolist()) or [None]  # [None]: a single unpanelled axis
    ncols = 2 if len(panels) == 4 else min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    width = max(5.2 * ncols, 7.5)  # a single panel still needs room for the title and legend
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.9 * nrows + 1.2), squeeze=False, layout="constrained")
    colors = series_colors(frame["series"].unique())
    for ax, panel in zip(axes.flat, panels):
        own = frame if panel is None else frame[frame["panel"] == panel]
        draw_curves(ax, own, metric, factor, colors)
        if panel is not None:
            ax.set_title(f"{int(panel)} digits")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(_wrap(title, width))
    handles = _legend_handles(frame, factor, colors)
    fig.legend(handles=handles, loc="outside lower center", ncol=max(1, min(len(handles), int(width / 1.7))), frameon=False,
               title=band_note, title_fontsize="small")
    return fig


PAIR_COLORS = {"LSTM - RNN": "tab:purple", "GRU - RNN": "tab:olive", "GRU - LSTM": "tab:cyan"}


def draw_differences(ax, frame: pd.DataFrame, metric: str) -> None:
    """One panel of fig 8: per pair of cells the difference of their means over seeds against step, its band, and
    the zero line (no difference)."""
    ax.axhline(0, color="black", lw=1.0, ls="--", zorder=1)
    for pair, curve in frame.groupby("pair", sort=False):
        curve = curve.sort_values(STEP)
        color = PAIR_COLORS.get(pair, "0.3")
        banded = curve[curve["band"] != "none"]
        ax.fill_between(banded[STEP], banded["low"], banded["high"], color=color, alpha=0.12, lw=0)
        for edge in ("low", "high"):  # edges too: three overlapping fills alone blur into one another
            ax.plot(banded[STEP], banded[edge], color=color, lw=0.8, ls=":")
        ax.plot(curve[STEP], curve["value"], color=color, lw=2.2, label=pair)
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(DIFFERENCE_LABELS.get(metric, f"difference in mean {metric}"))
    ax.grid(True, which="major", alpha=0.3)
    if metric.endswith("loss"):  # a log10 difference reads as a ratio of geometric means on the right
        right = ax.secondary_yaxis("right", functions=(lambda d: 10.0**d, lambda r: np.log10(np.clip(r, 1e-12, None))))
        right.set_ylabel("ratio of geometric means")
        right.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.2g}x"))


DIFFERENCE_LABELS = {
    "train_loss": "difference in mean log10 train loss",
    "val_loss": "difference in mean log10 validation loss",
    "val_exact_match": "difference in mean validation exact match",
}


def difference_figure(frame: pd.DataFrame, metric: str, title: str, note: str):
    """Fig 8: one panel per digit length, one curve per pair of cells, one shared legend below."""
    panels = sorted(frame["panel"].unique().tolist())
    ncols = 2 if len(panels) == 4 else min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    width = max(5.6 * ncols, 7.5)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.9 * nrows + 1.4), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, panel in zip(axes.flat, panels):
        draw_differences(ax, frame[frame["panel"] == panel], metric)
        ax.set_title(f"{int(panel)} digits")
        ax.yaxis.set_tick_params(labelleft=True)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(_wrap(title, width))
    pairs = list(dict.fromkeys(frame["pair"]))
    handles = [Line2D([], [], color=PAIR_COLORS.get(p, "0.3"), lw=2.2, label=p) for p in pairs]
    handles.append(Line2D([], [], color="0.3", lw=0.8, ls=":", label="edges of the 95% band"))
    handles.append(Line2D([], [], color="black", lw=1.0, ls="--", label="no difference"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False,
               title=_wrap(note, width * 1.2), title_fontsize="small")
    return fig


HEAT_TEXT = 10.5  # points: the squares' text, still about 7 pt when the figure is printed at page width (6.5 in)
HEAT_LABELS = 11.5


def draw_heatmap(ax, frame: pd.DataFrame, norm) -> object:
    """One (cell, digits) panel: median steps to solve over lr (x) and layers (y), with the range over seeds
    (min-max) below it when every seed solved, or how many seeds solved when some did not; unsolved squares hatched."""
    lrs = sorted(frame["lr"].unique())
    layers = sorted(frame["layers"].unique())
    grid = np.full((len(layers), len(lrs)), np.nan)
    for row in frame.itertuples():
        grid[layers.index(row.layers), lrs.index(row.lr)] = row.median_steps_to_solve
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", norm=norm, origin="lower", aspect="auto")
    run = set(zip(frame["lr"], frame["layers"]))
    for x, lr in enumerate(lrs):  # one-factor grids leave most (lr, layers) pairs out
        for y, n in enumerate(layers):
            if (lr, n) not in run:
                ax.text(x, y, "no finished\ntrial", ha="center", va="center", fontsize=HEAT_TEXT - 1.5, color="0.5")
    for row in frame.itertuples():
        x, y = lrs.index(row.lr), layers.index(row.layers)
        solved = np.isfinite(row.median_steps_to_solve)
        if not solved:
            ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="0.88", hatch="//", edgecolor="0.7", lw=0))
        colour = "white" if solved and norm(row.median_steps_to_solve) > 0.55 else "black"
        median = f"{row.median_steps_to_solve:.0f}" if solved else "unsolved"
        if row.n_solved < row.n_seeds:
            below = f"{row.n_solved}/{row.n_seeds} solved"
        elif row.n_seeds > 1 and row.high > row.low:
            below = f"[{row.low:.0f}-{row.high:.0f}]"
        else:
            below = ""
        ax.text(x, y + (0.13 if below else 0), median, ha="center", va="center", color=colour,
                fontsize=HEAT_TEXT + (1 if solved else 0), fontweight="bold" if solved else "normal")
        if below:
            ax.text(x, y - 0.2, below, ha="center", va="center", fontsize=HEAT_TEXT - 0.5, color=colour)
    ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_yticks(range(len(layers)), [str(int(n)) for n in layers])
    ax.tick_params(labelsize=HEAT_TEXT)
    return image


def heatmap_figure(frame: pd.DataFrame, title: str, note: str):
    """A grid of heat maps: one row per digit length, one column per cell type, one shared colour scale; sized so
    its text reads when printed at page width."""
    cells = series_order(frame["cell"].unique())
    lengths = sorted(frame["digits"].unique())
    finite = frame["median_steps_to_solve"].dropna()
    low, high = (finite.min(), finite.max()) if len(finite) else (1.0, 10.0)
    norm = LogNorm(vmin=low, vmax=max(high, low * 1.01))
    width = 2.75 * len(cells) + 1.9
    fig, axes = plt.subplots(len(lengths), len(cells), figsize=(width, 2.25 * len(lengths) + 2.0), squeeze=False,
                             layout="constrained")
    image = None
    for i, digits in enumerate(lengths):
        for j, cell in enumerate(cells):
            own = frame[(frame["cell"] == cell) & (frame["digits"] == digits)]
            ax = axes[i, j]
            if own.empty:
                ax.set_visible(False)
                continue
            image = draw_heatmap(ax, own, norm)
            ax.set_title(f"{cell}, {int(digits)} digits", fontsize=HEAT_LABELS)
            if j == 0:
                ax.set_ylabel("layers", fontsize=HEAT_LABELS)
            if i == len(lengths) - 1:
                ax.set_xlabel("learning rate", fontsize=HEAT_LABELS)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.6 if len(lengths) > 2 else 1.0, aspect=30)
        bar.set_label("median steps to solve (log scale)", fontsize=HEAT_LABELS)
        bar.ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 50, 100, 200, 500: never crowded
        bar.ax.yaxis.set_major_formatter(ScalarFormatter())
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
        bar.ax.tick_params(labelsize=HEAT_TEXT)
    fig.legend(handles=[Patch(facecolor="0.88", hatch="//", edgecolor="0.7", label="most seeds never solved")],
               loc="outside lower center", frameon=False, fontsize=HEAT_TEXT, title=_wrap(note, width * 1.1),
               title_fontsize=HEAT_TEXT)
    fig.suptitle(_wrap(title, width * 0.85), fontsize=HEAT_LABELS + 1)
    return fig


REACH_KINDS = {"uniform": "uniform random sums", "carry_chain": "carry chains (a + b = 10^L)"}
RUNG_LABELS = {"trained": "trained\nlength", "100": "100", "1000": "1,000", "10000": "10,000"}
PERCENT = FuncFormatter(lambda value, _: f"{value:.0%}")


DEPTH_MARKERS = ("o", "s", "^", "D", "v", "P")  # with the colour, so depths stay apart in grey print too


def depth_styles(depths) -> dict:
    """Depths in order on one sequential scale (deeper is darker), each with its own marker."""
    cmap = plt.get_cmap("plasma")
    return {d: dict(color=cmap(0.85 - 0.85 * i / max(len(depths) - 1, 1)), marker=DEPTH_MARKERS[i % len(DEPTH_MARKERS)])
            for i, d in enumerate(sorted(depths))}


def draw_reach_shares(ax, frame: pd.DataFrame, styles: dict) -> None:
    """One (cell, kind) panel: per depth, the share of adders exact at each rung (x) with its interval; depths are
    set a little apart on x so their error bars do not hide one another."""
    rungs = list(dict.fromkeys(frame["rung"]))  # the extraction's order: trained length, then up the ladder
    depths = sorted(frame["layers"].unique())
    offsets = (np.arange(len(depths)) - (len(depths) - 1) / 2) * 0.09
    for offset, depth in zip(offsets, depths):
        own = frame[frame["layers"] == depth].set_index("rung").loc[rungs]
        share = own["share"].to_numpy(dtype=float)
        error = np.vstack([share - own["low"].to_numpy(dtype=float), own["high"].to_numpy(dtype=float) - share])
        ax.errorbar(np.arange(len(rungs)) + offset, share, yerr=error, ms=5.5, lw=1.8, elinewidth=1.1, capsize=3,
                    **styles[depth])
    ax.set_xticks(range(len(rungs)), [RUNG_LABELS.get(r, r) for r in rungs])
    ax.set_xlim(-0.4, len(rungs) - 0.6)
    ax.set_ylim(-0.03, 1.03)
    ax.yaxis.set_major_formatter(PERCENT)
    ax.grid(True, axis="y", alpha=0.3)


def _depth_label(depth: int, group: pd.DataFrame) -> str:
    first = group.iloc[0]
    return (f"{series_label('layers', depth)}: n = {int(first['n'])}  "
            f"({int(first['never_solved'])} of {int(first['adders'])} never solved)")


def reach_figure(frame: pd.DataFrame, title: str, note: str):
    """One row per probe kind, one column per cell; below each column, its depths with n and the never-solved."""
    cells = series_order(frame["cell"].unique())
    kinds = [k for k in REACH_KINDS if k in set(frame["kind"])]
    styles = depth_styles(frame["layers"].unique())
    width = min(4.6 * len(cells) + 1.2, 16.0)  # at 100 dpi: at most 1,600 px wide
    fig, axes = plt.subplots(len(kinds), len(cells), figsize=(width, 3.5 * len(kinds) + 2.6), squeeze=False,
                             sharey=True, layout="constrained")
    for i, kind in enumerate(kinds):
        for j, cell in enumerate(cells):
            ax = axes[i, j]
            draw_reach_shares(ax, frame[(frame["kind"] == kind) & (frame["cell"] == cell)], styles)
            ax.set_title(f"{cell}: {REACH_KINDS[kind]}", fontsize=12)
            if j == 0:
                ax.set_ylabel("adders exact (exact match >= 0.99)\nhere and at every shorter length")
    for j, cell in enumerate(cells):  # n and the never-solved do not depend on the kind: one legend per cell
        own = frame[frame["cell"] == cell]
        handles = [Line2D([], [], lw=1.8, label=_depth_label(d, g), **styles[d]) for d, g in own.groupby("layers", sort=True)]
        axes[-1, j].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False,
                           fontsize=10, title=f"{cell}: adders per point, and those left out", title_fontsize=10)
    fig.suptitle(_wrap(title, width))
    fig.supxlabel(_wrap(note, width * 1.1), fontsize=9.5)
    return fig


FACTOR_LABELS = {"digits": "digit length", "lr": "learning rate", "layers": "depth (layers)", "cell": "cell type"}


def draw_importance(ax, frame: pd.DataFrame) -> None:
    """Grouped bars: one group per measure, one bar per factor, its normalised fANOVA importance written on it."""
    measures = list(dict.fromkeys(frame["measure"]))
    factors = list(dict.fromkeys(frame["factor"]))
    cmap = plt.get_cmap("tab10")
    width = 0.8 / len(factors)
    for i, factor in enumerate(factors):
        own = frame[frame["factor"] == factor].set_index("measure").loc[measures]
        x = np.arange(len(measures)) + (i - (len(factors) - 1) / 2) * width
        bars = ax.bar(x, own["importance"].fillna(0.0), width * 0.92, color=cmap(i), label=FACTOR_LABELS.get(factor, factor))
        ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "n/a" for v in own["importance"]], fontsize=9,
                     padding=2)
    explained = frame.groupby("measure", sort=False)["variance_share"].sum(min_count=1).loc[measures]
    ax.set_xticks(range(len(measures)), [f"{m}\n(main effects: {v:.0%} of the variance)" if np.isfinite(v) else m
                                         for m, v in zip(measures, explained)])
    ax.set_ylim(0, max(1.0, float(frame["importance"].max(skipna=True) or 0) + 0.1))
    ax.set_ylabel("fANOVA importance\n(share of the main effects)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(frameon=False, ncol=len(factors), loc="upper right")


def importance_figure(frame: pd.DataFrame, title: str = "Which factor matters: fANOVA importance per measure",
                      note: str = ""):
    """One small bar figure of analysis.importance.factor_importance's frame."""
    fig, ax = plt.subplots(figsize=(10, 5.2), layout="constrained")
    draw_importance(ax, frame)
    fig.suptitle(_wrap(title, 10))
    if note:
        fig.supxlabel(_wrap(note, 12), fontsize=9.5)
    return fig
