"""The seed report's convergence figures, steps-to-solve heat maps, claims table and report.md for one sweep.

Usage: python analysis/plot_convergence.py [EXPERIMENT_DIR] [--out DIR] [--metric train_loss|val_loss|val_exact_match]
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

from analysis import crossed, draw  # noqa: E402
from analysis.claims import check_claims, claims_frame  # noqa: E402
from analysis.extract import Slice, curves, solve_heatmap, varied  # noqa: E402
from analysis.load import DEFAULT_STORAGE, InputError, latest_experiment, load_experiment  # noqa: E402
from analysis.report import FigureEntry, crossed_section, render  # noqa: E402
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
    CurveFigure("fig8_cell", "cell", "digits", "Seed figure 8: cell type"),
)


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


def save_figure(fig, frame: pd.DataFrame, out: Path, name: str) -> None:
    for suffix in ("png", "svg"):
        _replace_into(out / f"{name}.{suffix}", lambda tmp, s=suffix: fig.savefig(tmp, format=s, dpi=130))
    _replace_into(out / f"{name}.csv", lambda tmp: frame.to_csv(tmp, index=False))
    plt.close(fig)


def _held(chosen: Slice) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in chosen.fixed.items())


def _sentences(notes: list[str]) -> str:
    return "".join(f"{n[0].upper()}{n[1:]}. " for n in notes)


def _band_note(frame: pd.DataFrame) -> str:
    kinds = set(frame.loc[frame["kind"] == "mean", "band"]) - {"none"}
    if kinds == {"bootstrap95"}:
        return "line: mean over seeds; band: bootstrap 95% interval of the mean"
    if kinds:
        return "line: mean over seeds; band: bootstrap 95% interval (3+ seeds) or min-max (2 seeds)"
    return "one seed per setting: no band"


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
        fig = draw.curve_figure(frame, metric, spec.series, title, _band_note(frame))
        save_figure(fig, frame, out, f"{spec.name}_{metric}")
        note = (f"Held fixed: {held}. {_band_note(frame).capitalize()}; after a marker the mean is over the seeds "
                "still training. " + _sentences(chosen.notes))
        entries.append(FigureEntry(f"{spec.name}_{metric}", f"{spec.title}: {metric}", note.strip()))
    return entries


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
    fig = draw.heatmap_figure(frame, f"Median steps to solve over seeds\nheld fixed: {held}")
    save_figure(fig, frame, out, "heatmap_steps_to_solve")
    note = (f"Held fixed: {held}. Each square: median over seeds of the first evaluated step with exact match 1.0; "
            "'k/n solved' when some seeds never solved; hatched 'unsolved' when most seeds never solved. "
            + _sentences(chosen.notes)).strip()
    return [FigureEntry("heatmap_steps_to_solve", "Steps to solve: lr x layers per cell and digit length", note)]


def reach_figure(experiment, out: Path, skipped: list[str]) -> list[FigureEntry]:
    if not crossed.has_probes(experiment.trials):
        skipped.append("generalisation_reach: no finished trial has length-generalisation probes (the sweep predates them)")
        return []
    frame = crossed.reach_frame(experiment.trials)
    fig = draw.reach_figure(frame, "How far each trained adder adds exactly: uniform random sums and carry chains, "
                                   "probed at 100, 1,000 and 10,000 digits")
    save_figure(fig, frame, out, "generalisation_reach")
    note = ("Each square: the longest probed length up to which every probed length is added exactly (exact match >= 0.99), "
            "median over seeds (with an even number of seeds the lower one: the longest length most seeds reach), "
            "with the min..max over seeds below it when they differ; '-' means no further than the "
            "trained length. Random sums rarely carry far: the carry chains (a carry through every digit) are the hard test.")
    return [FigureEntry("generalisation_reach", "Length generalisation: uniform sums and carry chains", note)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", type=Path,
                        help=f"an experiment folder (default: the most recent one under {DEFAULT_STORAGE}/)")
    parser.add_argument("--out", type=Path, help="output folder (default: EXPERIMENT_DIR/analysis)")
    parser.add_argument("--metric", choices=METRICS, default="train_loss", help="what the curves show (default: train_loss)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # every input check happens before anything is written
        experiment = load_experiment(args.experiment or latest_experiment())
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or experiment.path / "analysis"
    try:  # the output place too: a late failure would come after the figures' work
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out} is a file, not a folder")
        check_can_write_under(out)
    except ValueError as err:
        print(f"error: --out {out}: cannot write the figures there: {err}", file=sys.stderr)
        return 2
    print(f"experiment: {experiment.path} ({len(experiment.trials)} trials)")
    for note in experiment.notes:
        print(f"note: {note}")
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    figures = curve_figures(experiment, out, args.metric, skipped) + heatmap_figure(experiment, out, skipped)
    figures += reach_figure(experiment, out, skipped)
    for line in skipped:
        print(f"skipped {line}")
    results = check_claims(experiment.history, experiment.trials)
    _replace_into(out / "claims.csv", lambda tmp: claims_frame(results).to_csv(tmp, index=False))
    text = render(experiment, figures, skipped, results)
    if crossed.is_crossed(experiment.trials):  # the full grid: every claim again at the settings the seed never tried
        across = crossed.crossed_claims(experiment.history, experiment.trials)
        _replace_into(out / "claims_crossed.csv", lambda tmp: claims_frame(across).to_csv(tmp, index=False))
        effects = crossed.effects_tables(experiment.trials)
        _replace_into(out / "factor_effects.csv", lambda tmp: effects[0][1].to_csv(tmp, index=False))
        text += "\n" + crossed_section(across, crossed.never_solved(experiment.trials),
                                        crossed.reach_table(experiment.trials) if crossed.has_probes(experiment.trials) else None,
                                        effects)
        print(f"crossed grid: {len(across)} claim checks at other settings: "
              + ", ".join(f"{n} {v}" for v, n in pd.Series([r.verdict for r in across]).value_counts().items()))
    _replace_into(out / "report.md", lambda tmp: Path(tmp).write_text(text))
    for r in results:
        print(f"{r.claim}: {r.verdict}")
    print(f"wrote {len(figures)} figures, claims.csv and report.md to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
