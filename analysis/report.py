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
from analysis.stats import steps_to_solve

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


def _verdict_table(results: list[ClaimResult]) -> pd.DataFrame:
    return pd.DataFrame([(r.claim, f"**{r.verdict}**", f"**{r.loss_verdict}**", "yes" if r.measures_disagree else "", r.statement)
                         for r in results], columns=["claim", "steps to solve", "loss", "measures disagree", "statement"])


INTERVALS = ("Numbers per setting: median over seeds (range: min-max over seeds). Comparisons: the median difference "
             "with a bootstrap 95% interval that resamples each setting's seeds independently, and a two-sided exact "
             "permutation test of ranks (p; with n seeds a side the smallest possible p is 2/C(2n, n): 0.1 for 3 vs 3, "
             "so 3 seeds can never decide a comparison: *undecidable*). Shares of seeds: exact (Clopper-Pearson) 95% "
             "intervals. p-values are Holm-corrected within a claim. Verdicts: *supported* (every check significantly "
             "the claim's way), *partly supported* (some, none against), *mixed* (some each way), *refuted* (some "
             "against, none for), *inconclusive*, *undecidable* (not even perfectly separated seeds could reach "
             "significance), *suggested* / *suggested against* (fewer than 3 seeds: point estimates).")


def claims_section(results: list[ClaimResult]) -> str:
    table = _verdict_table(results)
    parts = ["## Claims of the seed report\n", f"Measure: {MEASURE}.\n", INTERVALS + "\n", _table(table), ""]
    for r in results:
        parts.append(f"**{r.claim}** (steps to solve: {r.verdict}; loss: {r.loss_verdict}): {r.statement}\n")
        parts += [f"- {line}" for line in r.evidence] + [f"- untested: {line}" for line in r.untested] + [""]
    return "\n".join(parts)


VERDICT_ORDER = ("supported", "partly supported", "suggested", "mixed", "inconclusive", "undecidable", "suggested against",
                 "refuted", "not testable", "n/a")
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


def verdict_tally(results: list[ClaimResult], loss: bool = False) -> pd.DataFrame:
    """Per claim id (C2, C3, ...), the number of its stratum claims with each verdict (on steps to solve, or the loss)."""
    frame = pd.DataFrame({"claim": [r.claim.split(" [")[0] for r in results],
                          "verdict": [r.loss_verdict if loss else r.verdict for r in results]})
    tally = pd.crosstab(frame["claim"], frame["verdict"])
    order = [v for v in VERDICT_ORDER if v in tally.columns] + [v for v in tally.columns if v not in VERDICT_ORDER]
    return tally[order].assign(checks=tally.sum(axis=1)).reset_index().rename_axis(columns=None)


def crossed_section(results: list[ClaimResult], never: pd.DataFrame, reach: pd.DataFrame | None,
                    effects: list[tuple[str, pd.DataFrame]] = ()) -> str:
    """The crossed grid: verdicts per claim at every other cell, lr and depth; the settings that never solve; reach."""
    table = _verdict_table(results)
    tally = lambda verdicts: ", ".join(f"{n} {v}" for v, n in pd.Series(verdicts).value_counts().items())  # noqa: E731
    parts = ["## The claims in every stratum of the crossed grid\n",
             "Each claim of the seed re-checked at the cells, learning rates and depths the seed held fixed "
             f"(same measures, tests and intervals as above). Steps to solve: {tally([r.verdict for r in results])}; "
             f"loss: {tally([r.loss_verdict for r in results])}.\n",
             "Per claim, how many of its stratum claims got each verdict, on steps to solve:\n", _table(verdict_tally(results)), "",
             "and on the loss:\n", _table(verdict_tally(results, loss=True)), "",
             _table(table), "", "<details><summary>Evidence for every check</summary>\n"]
    for r in results:
        parts.append(f"**{r.claim}** (steps to solve: {r.verdict}; loss: {r.loss_verdict}): {r.statement}\n")
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


def setting_summary(trials: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per setting (config without seed): seeds, best exact match and sustained steps to solve over seeds."""
    varied_columns = ["digits"] + [c for c in SETTING_COLUMNS if c != "digits" and trials[c].nunique() > 1]
    rows = []
    for key, group in trials.groupby(varied_columns, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        solve = steps_to_solve(group, history)
        median, low, high = float(np.median(solve)), float(np.min(solve)), float(np.max(solve))
        fmt = lambda v: "never" if not np.isfinite(v) else f"{v:.0f}"  # noqa: E731
        rows.append({**dict(zip(varied_columns, key)), "seeds": len(group),
                     f"mean best {METRIC}": round(float(group["best_val_exact_match"].mean()), 3),
                     "median steps to solve (range)": f"{fmt(median)} ({fmt(low)}-{fmt(high)})",
                     "solved": f"{int(np.isfinite(solve).sum())}/{len(group)}",
                     "_rank": (-group["best_val_exact_match"].mean(), median)})
    return pd.DataFrame(rows)


def best_section(trials: pd.DataFrame, history: pd.DataFrame | None = None, per_length: int = 3) -> str:
    summary = setting_summary(trials, history)
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
                      figures_section(figures, skipped), claims_section(results),
                      best_section(experiment.trials, experiment.history)])


def pooled_section(pooled: pd.DataFrame) -> str:
    """Each factor claim as a whole over the crossed grid's strata, per measure: the verdict, then its pairs."""
    if pooled.empty:
        return ""
    verdicts = pooled.drop_duplicates(["claim", "measure"]).pivot(index="claim", columns="measure", values="verdict")
    verdicts = verdicts.reindex(pd.unique(pooled["claim"])).reset_index().rename_axis(columns=None)
    shown = pooled.assign(
        difference=[f"{r.median_difference:+.3g} [{r.low:+.3g}, {r.high:+.3g}]" for r in pooled.itertuples()],
        strata_way=[f"{r.claimed_way} for, {r.against} against, {r.ties} tied" for r in pooled.itertuples()],
        p=[f"{p:.2g}" for p in pooled["p"]], p_holm=[f"{p:.2g}" for p in pooled["p_holm"]],
        flips=[_first(f) for f in pooled["flips"]])
    shown = shown[["claim", "measure", "pair", "strata_way", "difference", "p", "p_holm", "verdict", "flips"]]
    return ("## Each factor claim as a whole\n\nA claim about one factor, checked in every stratum of the others (the "
            "crossed grid: e.g. C2's 36 strata of cell x lr x depth) and answered once: per pair of its values, a two-sided "
            "Wilcoxon signed-rank test over strata of the difference in medians over seeds (a minus b; negative = a "
            "faster, the claim's way), the median difference with a bootstrap 95% interval over strata, and the strata "
            "that go against it; Holm-corrected within the claim and measure. Steps to solve count a never-solved seed "
            "as max_steps + one evaluation.\n\n" + _table(verdicts) + "\n\n" + _table(shown) + "\n")


def _first(flips: str, k: int = 4) -> str:
    items = [f for f in str(flips).split("; ") if f]
    return "" if not items else "; ".join(items[:k]) + (f"; and {len(items) - k} more" if len(items) > k else "")


def regressions_section(lost: pd.DataFrame) -> str:
    text = ("## Regressions\n\nAdders that were solved (exact match 1.0 at three evaluations in a row) and ended below 1.0: "
            f"{len(lost)}. They count as solved at their first streak in steps to solve.\n")
    if len(lost):
        cols = ["digits", "lr", "layers", "cell", "seed", "final_val_exact_match", "best_val_exact_match"]
        text += "\n" + _table(lost[cols].sort_values(cols[:5])) + "\n"
    return text


def generalisation_section(shares: pd.DataFrame, min_seeds: int) -> str:
    """Per config with at least min_seeds seeds: the share of its solved seeds exact on carry chains at each rung."""
    carry = shares[(shares["kind"] == "carry_chain") & (shares["seeds"] >= min_seeds)]
    if carry.empty:
        return ""
    carry = carry.assign(value=[f"{r.hits}/{r.of} = {r.share:.0%} [{r.low:.0%}, {r.high:.0%}]" if r.of else "-"
                                for r in carry.itertuples()])
    table = carry.pivot_table(index=["digits", "lr", "layers", "cell", "seeds", "solved", "regressed"], columns="rung",
                              values="value", aggfunc="first", sort=False)
    order = [c for c in ("trained", "100", "1,000", "10,000") if c in table.columns]
    table = table[order].fillna("-").reset_index().rename_axis(columns=None)  # "-": no such rung (trained at 100)
    return (f"## Generalisation per config ({min_seeds}+ seeds)\n\nOf the seeds that solved their trained length (three "
            "evaluations in a row), how many add carry chains (a carry through every digit) exactly at each rung, and at "
            "every shorter rung: hits/solved = share [exact 95% interval]. Probe sizes per rung: 256 sums at the trained "
            "length (the evaluation's carry-chain set), 256 at 100 digits, 64 at 1,000, 16 at 10,000. All configs and the "
            "uniform sums: `generalisation_by_config.csv`.\n\n" + _table(table) + "\n")


def more_seeds_section(wanted: pd.DataFrame, commands: list[tuple[str, pd.DataFrame, str]]) -> str:
    if wanted.empty:
        return "## Where more seeds would decide\n\nNothing: every verdict is decided and every share is an estimate.\n"
    lines = "\n".join(f"- `{command}` ({len(configs)} configs, `{name}`)" for name, configs, command in commands)
    return ("## Where more seeds would decide\n\nThe settings behind every undecided verdict (the seeds a claim of k checks "
            "needs so that 2/C(2n, n) < 0.05/k) and every carry-chain share split across too few seeds (at least 10). "
            "The files list the configs; each command adds exactly those seeds, numbered after the study's largest, "
            "without rerunning anything:\n\n" + lines + "\n\n" + _table(wanted) + "\n")
