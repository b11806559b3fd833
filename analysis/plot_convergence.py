"""The seed report's convergence figures, steps-to-solve heat maps, claims table and report.md for one sweep.

Usage: python analysis/plot_convergence.py [EXPERIMENT_DIR...] [--out DIR] [--metric train_loss|val_loss|val_exact_match]
                                          [--margins MARGINS.parquet...]

With --margins (analysis/mechanism_retrain.py's output), also adders.csv (every adder's trial row with its margin
summary), mechanism.png and a report section on how the adders do it (issue 19).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import crossed, draw, importance, mechanism, mechanism_figure  # noqa: E402
from analysis.claims import check_claims, claims_frame  # noqa: E402
from analysis.extract import UNFINISHED, Slice, cell_differences, curves, is_geometric, solve_heatmap, varied  # noqa: E402
from analysis.load import DEFAULT_STORAGE, InputError, latest_experiment, load_study  # noqa: E402
from analysis import design  # noqa: E402
from analysis.report import (  # noqa: E402
    FigureEntry, crossed_section, generalisation_section, more_seeds_section, pooled_section, regressions_section, render,
)
from analysis.stats import regressions  # noqa: E402
from tune_adder.metrics import SOLVED_PATIENCE  # noqa: E402
from tune_adder.paths import check_can_write_under  # noqa: E402

METRICS = ("train_loss", "val_loss", "val_exact_match")


@dataclass(frozen=True)
class CurveFigure:
    name: str
    series: str  # one curve per value of this config column
    panel: str | None  # one panel per value of this column
    title: str


CURVE_FIGURES = (
    CurveFigure("fig3_digits", "digits", None, "Seed figure 3: digit length"),
    CurveFigure("fig4_lr", "lr", "digits", "Seed figure 4: learning rate"),
    CurveFigure("fig5_layers", "layers", "digits", "Seed figure 5: depth"),
)  # seed figure 8 (cell type) is drawn as differences between cells: cell_figure
CELL_FIGURE = "fig8_cell"


def _replace_into(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_figure(fig, frame: pd.DataFrame, out: Path, name: str, dpi: int = 130) -> None:
    for suffix in ("png", "svg"):
        _replace_into(out / f"{name}.{suffix}", lambda tmp, s=suffix: fig.savefig(tmp, format=s, dpi=dpi))
    _replace_into(out / f"{name}.csv", lambda tmp: frame.to_csv(tmp, index=False))
    plt.close(fig)


def _held(chosen: Slice) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in chosen.fixed.items())


def _sentences(notes: list[str]) -> str:
    return "".join(f"{n[0].upper()}{n[1:]}. " for n in notes)


def _band_note(frame: pd.DataFrame, metric: str) -> str:
    """What the lines and bands of a curve figure are, from the bands its frame actually holds."""
    means = frame[frame["kind"] == "mean"]
    mean = "geometric mean (10 to the mean log10)" if is_geometric(metric) else "mean"
    ranged = sorted(means.loc[means["band"] == "range", "n_seeds"].unique())
    bands = []
    if ranged:
        count = str(ranged[0]) if len(ranged) == 1 else f"{ranged[0]}-{ranged[-1]}"
        bands.append(f"range of the {count} seeds")
    if (means["band"] == "bootstrap95").any():
        of = "geometric mean" if is_geometric(metric) else "mean"
        bands.append(f"bootstrap 95% interval of the {of}" + (f" ({ranged[-1] + 1}+ seeds)" if ranged else ""))
    if not bands:
        return f"thick line: {mean}; one seed per setting: no band"
    return f"thick line: {mean} over seeds; thin lines: single seeds; band: {' or '.join(bands)}"


def curve_figures(experiment, out: Path, metric: str, skipped: list[str]) -> list[FigureEntry]:
    entries = []
    for spec in CURVE_FIGURES:
        values = varied(experiment.trials, spec.series)
        if len(values) < 2:
            skipped.append(f"{spec.name}: the sweep did not vary {spec.series} (only {values})")
            continue
        frame, chosen = curves(experiment.history, experiment.trials, spec.series, spec.panel, metric)
        if frame.empty or frame.loc[frame["kind"] == "mean", "series"].nunique() < 2:
            skipped.append(f"{spec.name}: fewer than two {spec.series} values with {metric} data at the held settings")
            continue
        held = _held(chosen) or "nothing else varied"
        title = f"{spec.title}: {metric.replace('_', ' ')}\nheld fixed: {held}"
        fig = draw.curve_figure(frame, metric, spec.series, title, _band_note(frame, metric))
        save_figure(fig, frame, out, f"{spec.name}_{metric}")
        note = (f"Held fixed: {held}. {_band_note(frame, metric).capitalize()}; after a marker the mean is over the "
                "seeds still training. " + _sentences(chosen.notes))
        entries.append(FigureEntry(f"{spec.name}_{metric}", f"{spec.title}: {metric}", note.strip()))
    return entries + cell_figure(experiment, out, metric, skipped)


def cell_figure(experiment, out: Path, metric: str, skipped: list[str]) -> list[FigureEntry]:
    """Seed figure 8 as differences between cells: three near-identical curves cannot show which cell is faster."""
    name = f"{CELL_FIGURE}_{metric}"
    if len(varied(experiment.trials, "cell")) < 2:
        skipped.append(f"{CELL_FIGURE}: the sweep did not vary cell (only {varied(experiment.trials, 'cell')})")
        return []
    frame, chosen = cell_differences(experiment.history, experiment.trials, metric)
    if frame.empty:
        skipped.append(f"{CELL_FIGURE}: no two cells with {metric} data at the held settings")
        return []
    held = _held(chosen) or "nothing else varied"
    measure = f"mean log10 {metric.replace('_', ' ')}" if is_geometric(metric) else f"mean {metric.replace('_', ' ')}"
    fewest, most = int(frame[["n_a", "n_b"]].min().min()), int(frame[["n_a", "n_b"]].max().max())
    seeds = str(most) if fewest == most else f"{fewest}-{most}"
    band = (f"band: 95% percentile bootstrap of the difference, each cell's seeds ({seeds} per cell) resampled "
            "on their own")
    if is_geometric(metric):
        band += "; below zero the first cell's loss is lower (right axis: the ratio of geometric means)"
    title = f"Seed figure 8: cell type, as differences between cells in {measure}\nheld fixed: {held}"
    fig = draw.difference_figure(frame, metric, title, f"line: difference in {measure} over seeds; {band}")
    save_figure(fig, frame, out, name)
    note = (f"Held fixed: {held}. Each curve: one cell's {measure} over seeds minus another's at each step; {band}. "
            "An interval that excludes zero separates the cells at that step (one step of many, not corrected "
            "for looking at all of them). " + _sentences(chosen.notes))
    return [FigureEntry(name, f"Seed figure 8: cell type, differences: {metric}", note.strip())]


def heatmap_figure(experiment, out: Path, skipped: list[str]) -> list[FigureEntry]:
    trials = experiment.trials
    if len(varied(trials, "lr")) < 2 and len(varied(trials, "layers")) < 2:
        skipped.append("heatmap_steps_to_solve: the sweep varied neither lr nor layers")
        return []
    frame, chosen = solve_heatmap(trials)
    if frame.empty:
        skipped.append("heatmap_steps_to_solve: no finished trial yet (" + "; ".join(chosen.notes) + ")")
        return []
    held = _held(chosen) or "nothing else varied"
    seeds = sorted(frame["n_seeds"].unique())
    count = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    legend = (f"Each square: the median over the {count} seeds of the steps to solve (the first of {SOLVED_PATIENCE} "
              "evaluations in a row with exact match 1.0); below it [fewest-most]: the range (min-max) of those steps "
              "over the seeds, or 'k/n solved' when some seeds never solved within max_steps.")
    fig = draw.heatmap_figure(frame, f"Steps to solve: lr x layers, per digit length and cell\nheld fixed: {held}",
                              legend)
    save_figure(fig, frame, out, "heatmap_steps_to_solve")
    note = (f"Held fixed: {held}. {legend} Hatched 'unsolved': most seeds never solved. "
            + _sentences(chosen.notes)).strip()
    return [FigureEntry("heatmap_steps_to_solve", "Steps to solve: lr x layers per cell and digit length", note)]


REACH_DPI = 100  # the reach figure is 16 in wide at most: at most 1,600 px


def _pooled(trials: pd.DataFrame, columns: tuple[str, ...]) -> str:
    """'3 lr x 4 trained lengths x 3 seeds': what one point of a pooled figure pools."""
    names = {"lr": "lr", "digits": "trained lengths", "seed": "seeds"}
    return " x ".join(f"{len(varied(trials, c))} {names[c]}" for c in columns)


def reach_figure(experiment, out: Path, skipped: list[str]) -> list[FigureEntry]:
    if not crossed.has_probes(experiment.trials):
        finished = (~experiment.trials["stop_reason"].isin(UNFINISHED)).sum()
        why = "no trial has finished yet" if finished == 0 else "the sweep predates them, or its trials were cut before the end"
        skipped.append(f"generalisation_reach: no finished trial has length-generalisation probes ({why})")
        return []
    frame = crossed.reach_shares(experiment.trials)
    pooled = _pooled(experiment.trials, ("lr", "digits", "seed"))
    title = ("How far the trained adders add exactly: the share exact at their trained length and at 100, 1,000 and "
             "10,000 digits\n"
             f"n = adders per point (legend): those that solved their own length, over {pooled}; "
             "bars: exact 95% interval")
    note = ("A length counts only when every shorter one passed too, so each line can only fall. Trained length: the "
            "last evaluation's exact match on held-out sums of that length (uniform), or on its carry chains. Adders that never solved their own length (no evaluation with exact match 1.0) "
            "are left out of n and counted in each cell's legend. Error bars: exact (Clopper-Pearson) 95% intervals, "
            "the adders taken as independent.")
    fig = draw.reach_figure(frame, title, note)
    save_figure(fig, frame, out, "generalisation_reach", dpi=REACH_DPI)
    entry_note = (f"Each point: of the adders of that cell and depth ({pooled} pooled) that solved their own length, "
                  "the share exact (exact match >= 0.99) at that length. " + note)
    return [FigureEntry("generalisation_reach", "Length generalisation: uniform sums and carry chains", entry_note)]


def importance_figure(experiment, out: Path, skipped: list[str]) -> list[FigureEntry]:
    """Factor importance (fANOVA) for convergence and generalisation: only on a crossed grid, where every factor
    value sees every combination of the others."""
    if not crossed.is_crossed(experiment.trials):
        skipped.append("factor_importance: not a crossed grid (every cell, lr and depth at every length)")
        return []
    frame = importance.factor_importance(experiment.trials)
    trials = int(frame["trials"].max())
    legend = (f"Optuna's fANOVA (seed {importance.FANOVA_SEED}), one in-memory study per measure over the {trials} "
              "finished trials, each factor categorical. Bars: a factor's main effect as a share of the four main "
              "effects (they sum to 1); under each measure: the share of its variance the main effects explain (the "
              f"rest: interactions). Steps to solve: unsolved adders censored at max_steps + {importance.CENSOR_AFTER}.")
    measures = "; ".join(f"*{name}*: {what}" for name, what in importance.MEASURES.items())
    note = f"{legend} Measures: {measures}. {importance.ANOVA_NOTE[0].upper()}{importance.ANOVA_NOTE[1:]}."
    fig = draw.importance_figure(frame, "Which factor matters most: fANOVA importance of digits, lr, depth and cell",
                                 legend)
    save_figure(fig, frame, out, "factor_importance")
    return [FigureEntry("factor_importance", "Factor importance: convergence and generalisation (fANOVA)", note)]


def mechanism_outputs(experiment, margins: pd.DataFrame, out: Path) -> str:
    """adders.csv (the study's trial rows with each adder's margin summary and predicted rungs), mechanism.png with
    its numbers as CSV, and the report section."""
    predicted = mechanism_figure.predictions(margins)
    table = mechanism.adder_table(experiment.trials, margins, predicted)
    _replace_into(out / "adders.csv", lambda tmp: table.to_csv(tmp, index=False))
    bands, carry = mechanism_figure.margin_bands(margins), mechanism_figure.layer_carry(margins)
    _replace_into(out / "mechanism_margins.csv", lambda tmp: bands.to_csv(tmp, index=False))
    _replace_into(out / "mechanism_carry.csv", lambda tmp: carry.to_csv(tmp, index=False))
    fig = mechanism_figure.draw(bands, carry, mechanism_figure.title(margins), predicted)
    _replace_into(out / "mechanism.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    print(f"margins: {len(margins)} of {len(experiment.trials)} adders measured; adders.csv, mechanism.png")
    return mechanism.section(margins, predicted, len(experiment.trials), "mechanism.png")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="*", type=Path,
                        help=f"an experiment folder (default: the most recent one under {DEFAULT_STORAGE}/), or several "
                             "read as one study (each run once), e.g. data/full-seeds3 data/more-seeds/*/")
    parser.add_argument("--out", type=Path, help="output folder (default: EXPERIMENT_DIR/analysis; with several "
                                                  "folders, FIRST_DIR/analysis-study)")
    parser.add_argument("--margins", nargs="+", type=Path, metavar="PARQUET",
                        help="margin profiles from analysis/mechanism_retrain.py (e.g. data/margins/margins.parquet): "
                             "adds adders.csv, mechanism.png and a report section")
    parser.add_argument("--metric", choices=METRICS, default="train_loss", help="what the curves show (default: train_loss)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # every input check happens before anything is written
        experiment = load_study(args.experiment or [latest_experiment()])
        margins = mechanism.read_margins(args.margins) if args.margins else None
    except (InputError, mechanism.MarginsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or experiment.path / ("analysis" if len(args.experiment) <= 1 else "analysis-study")
    try:  # the output place too: a late failure would come after the figures' work
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out} is a file, not a folder")
        check_can_write_under(out)
    except ValueError as err:
        print(f"error: --out {out}: cannot write the figures there: {err}", file=sys.stderr)
        return 2
    folders = experiment.settings.get("merged_from")
    shown = f"{len(folders)} folders read as one study, first {experiment.path}" if folders else str(experiment.path)
    print(f"experiment: {shown} ({len(experiment.trials)} trials)")
    for note in experiment.notes:
        print(f"note: {note}")
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    figures = curve_figures(experiment, out, args.metric, skipped) + heatmap_figure(experiment, out, skipped)
    figures += reach_figure(experiment, out, skipped)
    figures += importance_figure(experiment, out, skipped)
    for line in skipped:
        print(f"skipped {line}")
    results = check_claims(experiment.history, experiment.trials)
    _replace_into(out / "claims.csv", lambda tmp: claims_frame(results).to_csv(tmp, index=False))
    text = render(experiment, figures, skipped, results)
    finished = experiment.trials[~experiment.trials["stop_reason"].isin(UNFINISHED)]
    text += "\n" + regressions_section(regressions(experiment.history, finished))
    shares = design.generalisation_by_config(finished, experiment.history) if crossed.has_probes(finished) else None
    if shares is not None:
        _replace_into(out / "generalisation_by_config.csv", lambda tmp: shares.to_csv(tmp, index=False))
        text += "\n" + generalisation_section(shares, design.MIN_SHARE_SEEDS)
    across: list = []
    if crossed.is_crossed(experiment.trials):  # the full grid: every claim again at the settings the seed never tried
        across = crossed.crossed_claims(experiment.history, experiment.trials)
        _replace_into(out / "claims_crossed.csv", lambda tmp: claims_frame(across).to_csv(tmp, index=False))
        pooled = crossed.pooled_claims(experiment.history, experiment.trials)
        _replace_into(out / "claims_pooled.csv", lambda tmp: pooled.to_csv(tmp, index=False))
        text += "\n" + pooled_section(pooled)
        print("factor claims as a whole (steps to solve / loss): " + "; ".join(
            f"{c} {'/'.join(g.drop_duplicates('measure')['verdict'])}" for c, g in pooled.groupby("claim", sort=False)))
        effects = crossed.effects_tables(experiment.trials)
        _replace_into(out / "factor_effects.csv", lambda tmp: effects[0][1].to_csv(tmp, index=False))
        text += "\n" + crossed_section(across, crossed.never_solved(experiment.trials),
                                        crossed.reach_table(experiment.trials) if crossed.has_probes(experiment.trials) else None,
                                        effects)
        for label, verdicts in (("steps to solve", [r.verdict for r in across]), ("loss", [r.loss_verdict for r in across])):
            print(f"crossed grid: {len(across)} stratum claims, {label}: "
                  + ", ".join(f"{n} {v}" for v, n in pd.Series(verdicts).value_counts().items()))
    if margins is not None:
        ours = margins[margins["trial_id"].isin(set(experiment.trials["trial_id"]))].reset_index(drop=True)
        if len(ours) < len(margins):
            print(f"margins: {len(margins) - len(ours)} rows of --margins are adders of other experiments: left out")
        if len(ours):
            text += "\n" + mechanism_outputs(experiment, ours, out)
    wanted = design.more_seeds(results + across, finished, shares)
    commands = design.sweep_commands(wanted, finished)
    for name, configs, _ in commands:
        _replace_into(out / name, lambda tmp, c=configs: c.to_csv(tmp, index=False))
    text += "\n" + more_seeds_section(wanted, commands)
    _replace_into(out / "report.md", lambda tmp: Path(tmp).write_text(text))
    for r in results:
        print(f"{r.claim}: steps to solve {r.verdict}; loss {r.loss_verdict}")
    for _, configs, command in commands:
        print(f"more seeds would decide {len(configs)} settings: {command}")
    print(f"wrote {len(figures)} figures, claims.csv and report.md to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
