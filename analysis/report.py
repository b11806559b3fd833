"""report.md for one experiment: settings and cost, figures, the claims table, the best configs."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tune_adder.metrics import METRIC, PROBE_LADDER, STOP_REASONS

from analysis.claims import MEASURE, ClaimResult
from analysis.extract import SETTING_COLUMNS
from analysis.load import Experiment
from analysis.stats import band, steps_to_solve

SETTINGS_ORDER = ("name", "grid", "search", "scheduler", "seeds", "max_steps", "stop_when_solved", "eval_every", "eval_size",
                  "num_trials", "status", "command", "start_time", "end_time", "wall_time_s")


@dataclass
class FigureEntry:
    name: str  # file stem: <name>.png/.svg/.csv
    title: str
    note: str  # what was held fixed, how bands are drawn


def _table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (pandas' to_markdown needs tabulate, which is not a dependency)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _show(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return f"`{text}`" if len(text) < 200 else f"`{text[:200]}...`"


def settings_section(settings: dict) -> str:
    if not settings:
        return "## Settings\n\nexperiment.json was missing or unreadable: the sweep's settings are unknown.\n"
    main = [k for k in SETTINGS_ORDER if k in settings]
    rest = sorted(k for k in settings if k not in SETTINGS_ORDER)
    text = "## Settings\n\n" + _table(pd.DataFrame({"setting": main, "value": [_show(settings[k]) for k in main]})) + "\n"
    if rest:
        more = _table(pd.DataFrame({"setting": rest, "value": [_show(settings[k]) for k in rest]}))
        text += f"\n<details><summary>All other settings in experiment.json</summary>\n\n{more}\n\n</details>\n"
    return text


def sweep_wall_time(settings: dict) -> str:
    """The sweep's wall time from experiment.json: the total, or the sum of its sessions if it never finished. A run
    of the command that was killed has no end in the record, so its time is missing and the sum is a lower bound."""
    sessions = [s for s in settings.get("sessions", []) if isinstance(s, dict)]
    known = [s["wall_time_s"] for s in sessions if isinstance(s.get("wall_time_s"), (int, float))]
    unknown = len(sessions) - len(known)
    total = settings.get("wall_time_s")
    if not isinstance(total, (int, float)):
        if not known:
            return "unknown (experiment.json has no wall time)"
        total = sum(known)
    text = f"{total / 60:.1f} min"
    if unknown:
        return (f"at least {text}: {unknown} of the {len(sessions)} runs of the command ended without recording "
                f"their end (killed), so their time is not in it; sweep status {settings.get('status', 'unknown')}")
    if len(sessions) > 1:
        return f"{text} over {len(sessions)} runs of the command, sweep status {settings.get('status', 'unknown')}"
    return text


def cost_section(experiment: Experiment) -> str:
    trials, settings = experiment.trials, experiment.settings
    reasons = trials["stop_reason"].value_counts()
    planned = settings.get("num_trials")
    count = f"{len(trials)} of {planned} planned" if isinstance(planned, int) and planned != len(trials) else str(len(trials))
    rows = [("trials", count),
            ("steps trained (all trials)", f"{int(trials['steps_trained'].sum()):,}"),
            ("sweep wall time", sweep_wall_time(settings)),
            ("trial time (sum over trials)", f"{pd.to_numeric(trials['wall_time_s']).sum() / 60:.1f} min"),
            ("stopped before max_steps", int((trials["stop_reason"] != "completed").sum()))]
    rows += [(f"stop reason: {r}", int(reasons.get(r, 0))) for r in STOP_REASONS if reasons.get(r, 0)]
    return "## Cost\n\n" + _table(pd.DataFrame(rows, columns=["", "value"])) + "\n"


def figures_section(figures: list[FigureEntry], skipped: list[str]) -> str:
    parts = ["## Figures\n"]
    for fig in figures:
        parts.append(f"### {fig.title}\n\n![{fig.title}]({fig.name}.png)\n\n{fig.note} Data: [`{fig.name}.csv`]({fig.name}.csv), "
                     f"vector: [`{fig.name}.svg`]({fig.name}.svg).\n")
    parts += [f"- skipped: {line}" for line in skipped]
    return "\n".join(parts) + "\n"


def claims_section(results: list[ClaimResult]) -> str:
    table = pd.DataFrame([(r.claim, f"**{r.verdict}**", r.statement) for r in results], columns=["claim", "verdict", "statement"])
    parts = ["## Claims of the seed report\n", f"Measure: {MEASURE}. Intervals: median [95% bootstrap CI over seeds; "
             f"min-max with fewer than 3 seeds]. Fewer than 3 seeds give at most *suggested*.\n", _table(table), ""]
    for r in results:
        parts.append(f"**{r.claim}** ({r.verdict}): {r.statement}\n")
        parts += [f"- {line}" for line in r.evidence] + [f"- untested: {line}" for line in r.untested] + [""]
    return "\n".join(parts)


VERDICT_ORDER = ("supported", "suggested", "inconclusive", "suggested against", "refuted", "not testable")
EFFECTS = {"solved": "solved", "carry_trained": "of those, carry chains exact at the trained length",
           "uniform_top": "of those, uniform exact to {top}",
           "carry_top": "of those, carry chains exact to {top}"}  # share columns of analysis.crossed.factor_effects -> report headers


def effects_display(frame: pd.DataFrame) -> pd.DataFrame:
    """analysis.crossed.factor_effects for reading: each share as 'k/n = share [low, high]', '-' for a share of nothing."""
    top = f"{PROBE_LADDER[-1]:,}"
    out = frame[[c for c in frame.columns if not c.startswith(tuple(f"{n}_" for n in EFFECTS))]].copy()
    for name, header in EFFECTS.items():
        if f"{name}_hits" not in frame:
            continue
        out[header.format(top=top)] = [
            "-" if r[f"{name}_of"] == 0 else
            f"{r[f'{name}_hits']}/{r[f'{name}_of']} = {r[f'{name}_share']:.0%} [{r[f'{name}_low']:.0%}, {r[f'{name}_high']:.0%}]"
            for r in frame.to_dict("records")]  # fmt: skip
    return out


def verdict_tally(results: list[ClaimResult]) -> pd.DataFrame:
    """Per claim id (C2, C3, ...), the number of its checks with each verdict, in a fixed verdict order."""
    frame = pd.DataFrame({"claim": [r.claim.split(" [")[0] for r in results], "verdict": [r.verdict for r in results]})
    tally = pd.crosstab(frame["claim"], frame["verdict"])
    order = [v for v in VERDICT_ORDER if v in tally.columns] + [v for v in tally.columns if v not in VERDICT_ORDER]
    return tally[order].assign(checks=tally.sum(axis=1)).reset_index().rename_axis(columns=None)


def crossed_section(results: list[ClaimResult], never: pd.DataFrame, reach: pd.DataFrame | None,
                    effects: list[tuple[str, pd.DataFrame]] = ()) -> str:
    """The crossed grid: verdicts per claim at every other cell, lr and depth; the settings that never solve; reach."""
    table = pd.DataFrame([(r.claim, f"**{r.verdict}**", r.statement) for r in results], columns=["claim", "verdict", "statement"])
    counts = pd.Series([r.verdict for r in results]).value_counts()
    parts = ["## The claims across the crossed grid\n",
             "Each claim of the seed re-checked at the cells, learning rates and depths the seed held fixed "
             f"(same measure and intervals as above): {', '.join(f'{n} {v}' for v, n in counts.items())}.\n",
             "Per claim, how many of its checks got each verdict:\n", _table(verdict_tally(results)), "",
             _table(table), "", "<details><summary>Evidence for every check</summary>\n"]
    for r in results:
        parts.append(f"**{r.claim}** ({r.verdict}): {r.statement}\n")
        parts += [f"- {line}" for line in r.evidence] + [f"- untested: {line}" for line in r.untested] + [""]
    parts.append("</details>\n")
    if effects:
        parts.append("### What each factor does\n\nAdders (trials) per value of a factor, over every value of the others and "
                     "every seed (the grid is balanced, so each value sees the same mix of the rest): how many solved their "
                     "trained length within max_steps (exact match 1.0 on the held-out random sums), how many of those also add "
                     "carry chains of that length exactly (random sums rarely carry far), and how many add exactly all the "
                     "way up the probe ladder. "
                     "Intervals: 95% bootstrap over configs, a config's seeds resampled together.\n")
        parts += [f"**{title}**\n\n{_table(effects_display(frame))}\n" for title, frame in effects]
    parts.append(f"### Settings that never solve\n\n{len(never)} settings where no seed reached exact match 1.0 within max_steps"
                 + (":\n\n" + _table(never) if len(never) else ".") + "\n")
    if reach is not None:
        parts.append("### Who learned the algorithm\n\nAdders (every length, depth and seed) whose exact addition holds up to "
                     "each probed length, counted among those trained on shorter sums:\n\n" + _table(reach) + "\n")
    return "\n".join(parts)


def setting_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Per setting (config without seed): seeds, best exact match and steps to solve over seeds."""
    varied_columns = ["digits"] + [c for c in SETTING_COLUMNS if c != "digits" and trials[c].nunique() > 1]
    rows = []
    for key, group in trials.groupby(varied_columns, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        median, low, high, _ = band(steps_to_solve(group), np.median)
        fmt = lambda v: "unsolved" if not np.isfinite(v) else f"{v:.0f}"  # noqa: E731
        rows.append({**dict(zip(varied_columns, key)), "seeds": len(group),
                     f"mean best {METRIC}": round(float(group["best_val_exact_match"].mean()), 3),
                     "median steps to solve [CI]": f"{fmt(median)} [{fmt(low)}, {fmt(high)}]",
                     "solved": f"{int(np.isfinite(steps_to_solve(group)).sum())}/{len(group)}",
                     "_rank": (-group["best_val_exact_match"].mean(), median)})
    return pd.DataFrame(rows)


def best_section(trials: pd.DataFrame, per_length: int = 3) -> str:
    summary = setting_summary(trials)
    best = summary.sort_values("_rank").groupby("digits", sort=True).head(per_length).sort_values(["digits", "_rank"])
    text = (f"## Best configs\n\nPer digit length, the {per_length} settings with the highest mean best {METRIC} over "
            "seeds, ties broken by median steps to solve.\n\n" + _table(best.drop(columns="_rank")) + "\n")
    full = _table(summary.drop(columns="_rank"))
    return text + f"\n<details><summary>All {len(summary)} settings</summary>\n\n{full}\n\n</details>\n"


def render(experiment: Experiment, figures: list[FigureEntry], skipped: list[str], results: list[ClaimResult]) -> str:
    head = f"# Sweep report: `{experiment.path.name}`\n\nExperiment folder: `{experiment.path}`.\n"
    if experiment.notes:
        head += "\n" + "\n".join(f"- note: {n}" for n in experiment.notes) + "\n"
    return "\n".join([head, settings_section(experiment.settings), cost_section(experiment),
                      figures_section(figures, skipped), claims_section(results), best_section(experiment.trials)])
