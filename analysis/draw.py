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


def draw_curves(ax, frame: pd.DataFrame, metric: str, factor: str, colors: dict) -> None:
    """One panel: mean curve + band per series, markers where single trials ended early."""
    means = frame[frame["kind"] == "mean"]
    for value, curve in means.groupby("series", sort=True):
        curve = curve.sort_values(STEP)
        color = colors[value]
        ax.plot(curve[STEP], curve["value"], color=color, lw=1.6, label=series_label(factor, value))
        banded = curve[curve["band"] != "none"]
        if not banded.empty:
            ax.fill_between(banded[STEP], banded["low"], banded["high"], color=color, alpha=0.2, lw=0)
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
    handles = [Line2D([], [], color=colors[v], lw=1.6, label=series_label(factor, v)) for v in colors]
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


def draw_heatmap(ax, frame: pd.DataFrame, norm) -> object:
    """One (cell, digits) panel: median steps to solve over lr (x) and layers (y), its interval over seeds below
    it (bootstrap 95% with 3+ seeds, min-max with 2); unsolved cells hatched."""
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
                ax.text(x, y, "no finished\ntrial", ha="center", va="center", fontsize=7, color="0.6")
    for row in frame.itertuples():
        x, y = lrs.index(row.lr), layers.index(row.layers)
        solved = np.isfinite(row.median_steps_to_solve)
        if not solved:
            ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="0.85", hatch="//", edgecolor="0.6", lw=0))
        text = f"{row.median_steps_to_solve:.0f}" if solved else "unsolved"
        if solved and np.isfinite(row.high) and row.n_seeds > 1 and row.high > row.low:
            text += f"\n[{row.low:.0f}-{row.high:.0f}]"  # the spread over seeds
        if row.n_solved < row.n_seeds:
            text += f"\n{row.n_solved}/{row.n_seeds} solved"
        shade = norm(row.median_steps_to_solve) if solved else 0
        ax.text(x, y, text, ha="center", va="center", fontsize=8, color="white" if solved and shade > 0.55 else "black")
    ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_yticks(range(len(layers)), [str(int(n)) for n in layers])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("layers")
    return image


def heatmap_figure(frame: pd.DataFrame, title: str):
    """A grid of heat maps: one row per cell type, one column per digit length, one shared colour scale."""
    cells = series_order(frame["cell"].unique())
    lengths = sorted(frame["digits"].unique())
    finite = frame["median_steps_to_solve"].dropna()
    low, high = (finite.min(), finite.max()) if len(finite) else (1.0, 10.0)
    norm = LogNorm(vmin=low, vmax=max(high, low * 1.01))
    fig, axes = plt.subplots(len(cells), len(lengths), figsize=(3.4 * len(lengths) + 1.2, 2.9 * len(cells) + 0.8),
                             squeeze=False, layout="constrained")
    image = None
    for i, cell in enumerate(cells):
        for j, digits in enumerate(lengths):
            own = frame[(frame["cell"] == cell) & (frame["digits"] == digits)]
            ax = axes[i, j]
            if own.empty:
                ax.set_visible(False)
                continue
            image = draw_heatmap(ax, own, norm)
            ax.set_title(f"{cell}, {int(digits)} digits")
    if image is not None:
        bar = fig.colorbar(image, ax=axes, label="median steps to solve (log scale)", shrink=0.9 if len(cells) > 1 else 1.0)
        bar.ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 50, 100, 200, 500: never crowded
        bar.ax.yaxis.set_major_formatter(ScalarFormatter())
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(_wrap(title, fig.get_figwidth()))
    return fig


REACH_KINDS = {"uniform": "uniform random sums", "carry_chain": "carry chains (a + b = 10^L)"}


def _rung_label(n: float) -> str:
    return f"{n / 1000:g}k" if n >= 1000 else f"{n:g}"


def draw_reach(ax, frame: pd.DataFrame, cmap, norm, trained: int) -> object:
    """One (cell, digits, kind) panel: how far the adders generalise over lr (x) and layers (y): the median reach over
    seeds as a colour, its min-max over seeds as text; '-' when the median stays at the trained length."""
    lrs, layers = sorted(frame["lr"].unique()), sorted(frame["layers"].unique())
    grid = np.full((len(layers), len(lrs)), np.nan)
    for row in frame.itertuples():
        grid[layers.index(row.layers), lrs.index(row.lr)] = _rung_index(row.median_reach, trained)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, origin="lower", aspect="auto")
    for row in frame.itertuples():
        x, y = lrs.index(row.lr), layers.index(row.layers)
        text = "-" if row.median_reach <= trained else _rung_label(row.median_reach)
        if row.min_reach != row.max_reach:
            low = "-" if row.min_reach <= trained else _rung_label(row.min_reach)
            text += f"\n({low}..{_rung_label(row.max_reach) if row.max_reach > trained else '-'})"
        dark = _rung_index(row.median_reach, trained) >= 2
        ax.text(x, y, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_yticks(range(len(layers)), [str(int(n)) for n in layers])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("layers")
    return image


def _rung_index(reach: float, trained: int) -> int:
    """The colour of a reach: 0 = no further than the trained length, else the position (1, 2, 3) on the ladder of the
    longest rung reached beyond it: 10,000 is 3 whether the adder was trained on 10 digits or on 100."""
    from tune_adder.metrics import PROBE_LADDER

    return max((i + 1 for i, n in enumerate(PROBE_LADDER) if reach >= n and n > trained), default=0)


def reach_figure(frame: pd.DataFrame, title: str):
    """Uniform sums and carry chains side by side: for each, one row per cell and one column per digit length."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    from tune_adder.metrics import PROBE_LADDER

    cells, lengths = series_order(frame["cell"].unique()), sorted(frame["digits"].unique())
    kinds = [k for k in REACH_KINDS if k in set(frame["kind"])]
    colours = ["0.88", *plt.get_cmap("viridis_r")(np.linspace(0.25, 1.0, len(PROBE_LADDER)))]
    cmap, norm = ListedColormap(colours), BoundaryNorm(np.arange(-0.5, len(PROBE_LADDER) + 1), len(colours))
    width = 2.6 * len(lengths) * len(kinds) + 1.6
    fig = plt.figure(figsize=(width, 2.5 * len(cells) + 1.6), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(1, len(kinds), wspace=0.04))
    image = None
    for subfig, kind in zip(subfigs, kinds):
        axes = subfig.subplots(len(cells), len(lengths), squeeze=False)
        for i, cell in enumerate(cells):
            for j, digits in enumerate(lengths):
                own = frame[(frame["kind"] == kind) & (frame["cell"] == cell) & (frame["digits"] == digits)]
                if own.empty:
                    axes[i, j].set_visible(False)
                    continue
                image = draw_reach(axes[i, j], own, cmap, norm, int(digits))
                axes[i, j].set_title(f"{cell}, trained on {int(digits)} digits", fontsize=9)
        subfig.suptitle(REACH_KINDS[kind], fontweight="bold")
    if image is not None:  # discrete rungs: a legend of swatches reads better than a colour bar
        from matplotlib.patches import Patch

        labels = ["no further than the trained length", *[f"exact up to {n:,} digits" for n in PROBE_LADDER]]
        fig.legend(handles=[Patch(facecolor=c, edgecolor="0.5", label=lab) for c, lab in zip(colours, labels)],
                   loc="outside lower center", ncol=len(labels) if width > 14 else 2, frameon=False,
                   title="median over seeds of the longest probed length added exactly (exact match >= 0.99 up to it)")
    fig.suptitle(_wrap(title, width))
    return fig
