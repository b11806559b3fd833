"""Which search finds the best config for the least compute: methods replayed on a recorded full grid.

Run: `PYTHONPATH=. nice python benchmarks/bench_search.py data/full-seeds3 [--reps 24] [--workers 4] [--ray-check 10]`

Each method runs `--reps` times at every operand length in simulated time (benchmarks/search_sim.py: Ray's own
ASHA object and Optuna's TPE, driven without a cluster); repetition r replays recorded seed r mod 3 with
searcher seed r. Per method and length: the training steps spent until the best config found so far is as good
as the table's best (median and 95 % interval over repetitions), the share of repetitions that found it, the
steps of the whole run, and each ratio to the FIFO grid. `--scan` adds ASHA's settings (metric x grace period x
reduction factor) on the grid's order. `--ray-check D` replays the same methods through the real sweep
(`python -m tune_adder.sweep --replay ... --digits D`, one trial at a time so the order is fixed) and compares
every trial's steps with the simulation's.

Writes into `--out` (default results/bench_search; the committed results are in benchmarks/measured): search.csv
(one row per method, length and repetition), search_summary.md, search_scan.md, search_ray_check.md and
search_anytime.png. A dataset or flag it cannot use exits 2 with one line, before anything is written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune_adder.frames import best_trials  # noqa: E402
from tune_adder.paths import check_can_write_under  # noqa: E402
from tune_adder.settings import ASHA_DEFAULTS, RESUME_DEFAULTS  # noqa: E402
from search_sim import FACTORS, Method, Table, key_of, load_tables, repetitions, simulate  # noqa: E402

# The sweep's `--scheduler asha` as it is configured by default (chosen from this benchmark's --scan).
ASHA = {"scheduler": "asha", "metric": ASHA_DEFAULTS["asha_metric"], "grace_period": ASHA_DEFAULTS["grace_period"],
        "reduction_factor": ASHA_DEFAULTS["reduction_factor"]}
# The comparison; "fifo-grid" is the baseline every ratio is taken against.
METHODS = (
    Method("fifo-grid"),
    Method("fifo-random", search="random"),
    Method("fifo-grid-solve", stop_when_solved=True),
    Method("tpe", search="tpe"),
    Method("asha-grid", **ASHA),
    Method("asha-grid-exact", **{**ASHA, "metric": "val_exact_match"}),  # the same rungs judged on exact match
    Method("asha-grid-before", scheduler="asha"),  # the defaults before the scan: exact match, grace 100, rf 3
    Method("asha-grid-solve", **ASHA, stop_when_solved=True),
    Method("tpe-asha", search="tpe", **ASHA),
    Method("tpe-asha-solve", search="tpe", **ASHA, stop_when_solved=True),
)
BASELINE = "fifo-grid"
SCAN_METRICS, SCAN_GRACE, SCAN_RF = ("val_exact_match", "val_loss"), (50, 100, 200), (2, 3, 4, 6, 8)
SCAN_SOLVE = (False, True)  # with --stop-when-solved too: a solved trial need not run to max_steps
ANYTIME = ("fifo-grid", "fifo-random", "fifo-grid-solve", "tpe", "asha-grid", "asha-grid-solve", "tpe-asha-solve")


def scan_methods() -> list[Method]:
    return [
        Method(f"asha-{metric}-g{grace}-rf{rf}" + ("-solve" if solve else ""), scheduler="asha", metric=metric,
               grace_period=grace, reduction_factor=rf, stop_when_solved=solve)
        for solve, metric, grace, rf in itertools.product(SCAN_SOLVE, SCAN_METRICS, SCAN_GRACE, SCAN_RF)
    ]


def run_methods(tables: list[Table], methods, reps: int, workers: int) -> pd.DataFrame:
    rows = [row for m in methods for row in repetitions(tables, m, reps, workers)]
    return pd.DataFrame(rows)


def _interval(values: pd.Series) -> tuple[float, float, float]:
    """Median and 95 % interval (2.5th and 97.5th percentiles) of the repetitions; inf counts as not found."""
    v = values.to_numpy(dtype=float)
    return float(np.median(v)), float(np.percentile(v, 2.5, method="lower")), float(np.percentile(v, 97.5, method="higher"))


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (method, digits), g in rows.groupby(["method", "digits"], sort=False):
        med, lo, hi = _interval(g["found_at"])
        out.append({
            "method": method, "digits": digits, "reps": len(g), "found_share": float(np.isfinite(g["found_at"]).mean()),
            "found_median": med, "found_lo": lo, "found_hi": hi, "total_median": float(g["total_steps"].median()),
        })  # fmt: skip
    table = pd.DataFrame(out)
    base = table[table["method"] == BASELINE].set_index("digits")
    table["found_ratio"] = table["found_median"] / table["digits"].map(base["found_median"])
    table["total_ratio"] = table["total_median"] / table["digits"].map(base["total_median"])
    return table


def choose(scan: pd.DataFrame, min_share: float = 0.95) -> pd.DataFrame:
    """ASHA settings ranked for a default: those that find the best in at least `min_share` of the repetitions at
    every length, by the geometric mean over lengths of their median steps-to-find relative to the FIFO grid."""
    asha = scan[scan["method"] != BASELINE]
    ranked = asha.groupby("method").agg(
        worst_share=("found_share", "min"),
        found_ratio_gmean=("found_ratio", lambda r: float(np.exp(np.log(r).mean()))),
        found_ratio_worst=("found_ratio", "max"),
        total_ratio_gmean=("total_ratio", lambda r: float(np.exp(np.log(r).mean()))),
    )
    ranked = ranked[ranked["worst_share"] >= min_share]
    return ranked.sort_values(["found_ratio_gmean", "total_ratio_gmean"])


def floors(tables: list[Table], workers: int, summary: pd.DataFrame) -> pd.DataFrame:
    """Per length: the least any scheduler over the grid's order could spend to find the best (Table.floor_steps,
    median over the recorded seeds), against the FIFO grid's median steps-to-find."""
    fifo = summary[summary["method"] == BASELINE].set_index("digits")["found_median"]
    out = pd.DataFrame(
        [{"digits": t.digits, "seed": t.seed, "floor": t.floor_steps(workers)} for t in tables]
    ).groupby("digits", as_index=False)["floor"].median()
    out["fifo_grid"] = out["digits"].map(fifo)
    out["floor / FIFO grid"] = (out["floor"] / out["fifo_grid"]).round(3)
    return out


def _times(ratio: float, fmt: str) -> str:
    return fmt.format(f"{ratio:.2f}") if math.isfinite(ratio) else ""


def _steps(x: float) -> str:
    return "never" if math.isinf(x) else f"{x:,.0f}"


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| method | digits | found best (steps, median [95 % interval]) | found in | / FIFO grid | whole run (steps) | / FIFO grid |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in table.to_dict("records"):
        ratio = "-" if math.isnan(r["found_ratio"]) or math.isinf(r["found_ratio"]) else f"{r['found_ratio']:.2f}"
        lines.append(
            f"| {r['method']} | {r['digits']} | {_steps(r['found_median'])} [{_steps(r['found_lo'])}, {_steps(r['found_hi'])}] "
            f"| {r['found_share']:.0%} | {ratio} | {_steps(r['total_median'])} | {r['total_ratio']:.2f} |"
        )
    return "\n".join(lines)


def anytime_figure(rows: pd.DataFrame, tables: list[Table], path: Path) -> None:
    """Best steps-to-solve found so far against steps spent: median and 10-90 % band over repetitions, per length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted(rows["digits"].unique())
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.2 * len(lengths), 4.0), squeeze=False, layout="constrained")
    unsolved = max(t.max_steps for t in tables) + 2 * max(t.eval_every for t in tables)  # where "nothing solved yet" sits
    for ax, digits in zip(axes[0], lengths):
        best = min(t.best_steps for t in tables if t.digits == digits)
        top = float(rows[rows["digits"] == digits]["total_steps"].max())
        grid = np.geomspace(100, top, 200)
        for method in ANYTIME:
            g = rows[(rows["method"] == method) & (rows["digits"] == digits)]
            if g.empty:
                continue
            curves = np.array([_trace_at(trace, grid, unsolved) for trace in g["trace"]])
            med = np.median(curves, axis=0)
            baseline = method == BASELINE
            line = ax.plot(grid, med, label=method, drawstyle="steps-post", lw=2.2 if baseline else 1.4,
                           color="black" if baseline else None, zorder=3 if baseline else 2)[0]
            ax.fill_between(grid, *np.percentile(curves, [10, 90], axis=0), step="post", alpha=0.12, color=line.get_color())
        ax.axhline(best, color="0.4", lw=0.8, ls=":")
        ticks = [t for t in (50, 100, 200, 500, 1000) if t < unsolved / 1.5]
        ax.set(xscale="log", yscale="log", title=f"{digits} digits", xlabel="training steps spent", ylim=(min(ticks[0], best) * 0.8, unsolved * 1.25))
        ax.set_yticks([*ticks, unsolved], [*map(str, ticks), "none"])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("steps to solve of the best config\nfound so far (log)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("Anytime search on the replayed full grid: median over repetitions, 10-90 % band; dotted: the best any config does",
                 fontsize=10)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _trace_at(trace: list[tuple[float, float]], grid: np.ndarray, unsolved: float) -> np.ndarray:
    out = np.full(len(grid), unsolved, dtype=float)
    for spent, best in trace:
        out[grid >= spent] = best
    return out


# --ray-check: the same methods through the real sweep, one trial at a time.
RAY_CHECK = {
    "fifo-grid": ["--grid", "full"],
    "asha-grid": ["--grid", "full", "--scheduler", "asha"],
    "asha-grid-exact": ["--grid", "full", "--scheduler", "asha", "--asha-metric", "val_exact_match"],
    "asha-grid-solve": ["--grid", "full", "--scheduler", "asha", "--stop-when-solved"],
    "tpe": ["--search", "optuna", "--num-samples", "36"],
    "tpe-asha": ["--search", "optuna", "--num-samples", "36", "--scheduler", "asha"],
}


def ray_check(dataset: Path, tables: list[Table], digits: int) -> pd.DataFrame:
    """Each RAY_CHECK method replayed by the sweep at `digits` (recorded seed 0, searcher seed 0, one trial at a
    time: --cpus-per-trial set to every CPU) against the simulation with one worker: the steps each trial trained."""
    table = next(t for t in tables if t.digits == digits and t.seed == 0)
    methods = {m.name: m for m in METHODS}
    rows = []
    with tempfile.TemporaryDirectory() as storage:
        for name, flags in RAY_CHECK.items():
            cmd = [sys.executable, "-m", "tune_adder.sweep", "--replay", str(dataset), *flags, "--digits", str(digits),
                   "--cpus-per-trial", str(os.cpu_count()), "--storage", storage, "--name", name, "--quiet"]  # fmt: skip
            start = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.time() - start
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
            trials = pd.read_parquet(Path(storage, name, "trials.parquet"))
            trials = trials.assign(order=trials["trial_id"].map(_creation_order(Path(storage, name), trials["trial_id"]))).sort_values("order")
            ray_runs = [(key_of(r), int(r["steps_trained"])) for r in trials.to_dict("records")]
            sim = simulate(table, methods[name], workers=1, rng_seed=0)
            same = sum(a == b for a, b in zip(ray_runs, sim.runs))
            ray_total = sum(s for _, s in ray_runs)
            rows.append({
                "method": name, "digits": digits, "trials": len(ray_runs), "same_trials": same,
                "ray_steps": ray_total, "sim_steps": sim.total, "steps_ratio": ray_total / sim.total, "ray_wall_s": round(wall, 1),
            })  # fmt: skip
    return pd.DataFrame(rows)


def _best(trials: pd.DataFrame) -> dict:
    """The sweep's best config: highest best val_exact_match, then fewest steps to solve."""
    row = best_trials(trials, 1).iloc[0]
    solve = row["steps_to_solve"]
    return {f: row[f] for f in ("digits", *FACTORS)} | {"steps_to_solve": math.inf if pd.isna(solve) else float(solve)}


def real_check(dataset: Path, experiment: Path) -> pd.DataFrame:
    """A real (trained) sweep against its replay from the dataset: the same command with --replay, same concurrency."""
    record = json.loads((experiment / "experiment.json").read_text())
    args = shlex.split(record["command"])[3:]  # after "python -m tune_adder.sweep"
    drop = {"--storage", "--name", "--status-every", "--address"}
    kept = [x for i, x in enumerate(args) if x not in drop and (i == 0 or args[i - 1] not in drop)]
    if record.get("scheduler") == "asha":  # the rungs it ran with, which the defaults of today may not be
        kept += ["--grace-period", str(record["grace_period"]), "--reduction-factor", str(record["reduction_factor"]),
                 "--asha-metric", record.get("asha_metric", RESUME_DEFAULTS["asha_metric"])]
    real = pd.read_parquet(experiment / "trials.parquet")
    with tempfile.TemporaryDirectory() as storage:
        cmd = [sys.executable, "-m", "tune_adder.sweep", *kept, "--replay", str(dataset), "--storage", storage, "--name", "replay", "--quiet"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        replay = pd.read_parquet(Path(storage, "replay", "trials.parquet"))
    steps = {name: frame.set_index([*FACTORS, "digits"])["steps_trained"] for name, frame in (("real", real), ("replay", replay))}
    same = int((steps["real"].sort_index() == steps["replay"].sort_index()).sum())
    rows = []
    for name, frame in (("real", real), ("replay", replay)):
        best = _best(frame)
        rows.append({"run": name, "trials": len(frame), "steps_spent": int(frame["steps_trained"].sum()),
                     "early_stopped": int((frame["stop_reason"] == "early_stopped").sum()),
                     "best": " ".join(f"{k}={v}" for k, v in best.items()), "same_steps_as_other": same})
    out = pd.DataFrame(rows)
    out["steps_ratio"] = out["steps_spent"] / out.loc[0, "steps_spent"]
    return out


def _creation_order(experiment: Path, trial_ids) -> dict[str, int]:
    """Trial id -> the order Tune created it in: the counter after the id in its folder's name
    (<trainable>_<id>_<n>_...); Optuna's trial ids are random, so they do not sort by it."""
    names = [f.name for f in experiment.iterdir() if f.is_dir()]
    order = {}
    for tid in trial_ids:
        name = next(n for n in names if f"_{tid}_" in n)
        order[tid] = int(name.split(f"_{tid}_", 1)[1].split("_", 1)[0])
    return order


def _frame_markdown(frame: pd.DataFrame) -> str:
    rows = [list(frame.columns), ["---"] * len(frame.columns), *frame.astype(str).values.tolist()]
    return "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows)


def wide_markdown(table: pd.DataFrame) -> str:
    """One row per method, one column per length: median steps to find the best (its ratio to the FIFO grid), the
    share of repetitions that found it when not all did, and the geometric mean of the ratios over lengths."""
    digits = sorted(table["digits"].unique())
    lines = ["| method | " + " | ".join(f"{d} digits" for d in digits) + " | gmean / FIFO grid |",
             "| --- |" + " ---: |" * (len(digits) + 1)]
    for method, g in table.groupby("method", sort=False):
        g = g.set_index("digits")
        cells = [_steps(g.at[d, "found_median"]) + _times(g.at[d, "found_ratio"], " ({}x)")
                 + ("" if g.at[d, "found_share"] == 1 else f", found in {g.at[d, 'found_share']:.0%}") for d in digits]
        gmean = float(np.exp(np.log(g["found_ratio"]).mean()))
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {_times(gmean, '{}x') or '-'} |")
    return "\n".join(lines)


class UsageError(Exception):
    """A dataset or flag this benchmark cannot use: one line on stderr and exit 2, before anything is written."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def _load(dataset: Path) -> list[Table]:
    """The dataset's tables, or a UsageError naming what is wrong with it."""
    missing = [n for n in ("history.parquet", "trials.parquet") if not (dataset / n).is_file()]
    if missing:
        raise UsageError(f"dataset {str(dataset)!r}: no {' or '.join(missing)} there; give a finished full-grid sweep's folder "
                         "(e.g. data/full-seeds3)")
    try:
        history, trials = pd.read_parquet(dataset / "history.parquet"), pd.read_parquet(dataset / "trials.parquet")
        tables = load_tables(history, trials) if len(history) and len(trials) else []
    except Exception as e:  # not parquet, or not a sweep's frames (a column missing)
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"dataset {str(dataset)!r} is not readable as a sweep's frames: {detail}") from None
    if not tables:
        raise UsageError(f"dataset {str(dataset)!r}: no operand length has every full-grid config recorded under one seed")
    return tables


def _check(a: argparse.Namespace) -> list[Table]:
    """Every flag and the dataset, before anything runs or is written."""
    for flag in ("reps", "workers"):
        if getattr(a, flag) < 1:
            raise UsageError(f"--{flag} {getattr(a, flag)} is not valid; it must be >= 1")
    tables = _load(a.dataset)
    lengths = sorted({t.digits for t in tables if t.seed == 0})
    if a.ray_check is not None and a.ray_check not in lengths:
        raise UsageError(f"--ray-check {a.ray_check} is not a length the dataset recorded whole under seed 0; "
                         f"choose one of: {', '.join(map(str, lengths)) or 'none'}")
    if a.real_check is not None:
        missing = [n for n in ("experiment.json", "trials.parquet") if not (a.real_check / n).is_file()]
        if missing:
            raise UsageError(f"--real-check {str(a.real_check)!r}: no {' or '.join(missing)} there; give a finished sweep's folder")
    try:
        check_can_write_under(a.out)
    except ValueError as e:
        raise UsageError(f"--out {str(a.out)!r} is not usable: {e}") from None
    return tables


def main(argv=None) -> int:
    p = _Parser(prog="benchmarks/bench_search.py", description=__doc__.splitlines()[0])
    p.add_argument("dataset", type=Path, help="a finished full-grid sweep's folder (history.parquet, trials.parquet)")
    p.add_argument("--reps", type=int, default=24, help="repetitions per method and length (default 24)")
    p.add_argument("--workers", type=int, default=4, help="trials running at once in the simulation (default 4)")
    p.add_argument("--scan", action="store_true", help="also scan ASHA's metric, grace period and reduction factor")
    p.add_argument("--ray-check", type=int, metavar="DIGITS", help="replay the methods through the real sweep at this length")
    p.add_argument("--real-check", type=Path, metavar="EXPERIMENT", help="a real (trained) sweep's folder: replay its "
                   "command from the dataset and compare the best config and the steps spent")
    p.add_argument("--out", type=Path, default=Path("results/bench_search"),
                   help="where the tables and the figure go (default results/bench_search; the committed results are "
                   "benchmarks/measured)")
    try:
        a = p.parse_args(argv)
        tables = _check(a)
    except UsageError as e:
        print(f"bench_search.py: error: {e}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    head = (f"dataset {a.dataset} ({', '.join(f'{t.digits}d seed {t.seed}' for t in tables)}), {a.reps} repetitions, "
            f"{a.workers} workers; {platform.node()}, {platform.processor() or platform.machine()}, Python {platform.python_version()}")  # fmt: skip
    print(head)
    start = time.time()
    rows = run_methods(tables, METHODS, a.reps, a.workers)
    summary = summarise(rows)
    floor = floors(tables, a.workers, summary)
    text = (f"{head}\n\nSteps spent until the best config is found, median over repetitions (ratio to the FIFO grid):"
            f"\n\n{wide_markdown(summary)}\n\n{markdown(summary)}\n\nThe floor for any scheduler over the grid's order (each config ahead of "
            f"the first best one reports once; the best trains to its steps to solve):\n\n{_frame_markdown(floor)}\n")
    print(text, f"({time.time() - start:.0f} s)")
    (a.out / "search_summary.md").write_text(text)
    all_rows = [rows]
    anytime_figure(rows, tables, a.out / "search_anytime.png")
    if a.scan:
        scan = run_methods(tables, [METHODS[0], *scan_methods()], a.reps, a.workers)
        scanned = summarise(scan)
        ranked = choose(scanned).round(3).reset_index()
        text = (f"{head}\n\n{wide_markdown(scanned)}\n\n{markdown(scanned)}\n\nASHA settings that find the best in >= 95 % of repetitions at every "
                f"length, best first (ratios to the FIFO grid; gmean over lengths):\n\n{_frame_markdown(ranked)}\n")
        print(text)
        (a.out / "search_scan.md").write_text(text)
        all_rows.append(scan[scan["method"] != BASELINE])
    flat = pd.concat(all_rows).assign(trace=lambda f: f["trace"].map(json.dumps))
    flat.to_csv(a.out / "search.csv", index=False)
    if a.ray_check is not None:
        check = ray_check(a.dataset, tables, a.ray_check)
        text = f"{head}\n\n{_frame_markdown(check)}\n"
        print(text)
        (a.out / "search_ray_check.md").write_text(text)
    if a.real_check is not None:
        check = real_check(a.dataset, a.real_check)
        text = f"real run {a.real_check} against its replay from {a.dataset}\n\n{_frame_markdown(check)}\n"
        print(text)
        (a.out / "search_real_check.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
