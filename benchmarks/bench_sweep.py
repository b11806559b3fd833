"""Sweep benchmarks: (a) Ray Tune's overhead on the quick grid against a plain multiprocess `fit` loop,
(b) ASHA against FIFO on the seed grid: steps and wall time until each finds FIFO's best config.

Run: `nice python benchmarks/bench_sweep.py overhead --reps 2` and
`nice python benchmarks/bench_sweep.py asha --max-steps 200`; each prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tune_adder import spaces  # noqa: E402
from tune_adder.metrics import CONFIG_COLUMNS, METRIC, STEP  # noqa: E402

PARALLEL = os.cpu_count() or 1  # the sweep's embedded Ray runs this many 1-CPU trials at once


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}


# ---- (a) overhead -----------------------------------------------------------------------------
def _train_one(config: dict) -> int:
    """One trial without Ray: the trainable's own config conversion, then `fit` to the end."""
    import torch

    from tune_adder.train import fit
    from tune_adder.trainable import to_configs

    torch.set_num_threads(1)  # as the sweep gives each 1-CPU trial
    model_cfg, train_cfg, _ = to_configs(config)
    start = time.perf_counter()
    evals = sum(1 for _ in fit(model_cfg, train_cfg))
    print(f"plain trial {config['digits']} {config['cell']} {config['lr']}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return evals


def plain_loop(grid: str) -> None:
    """The grid's trials by `fit` in PARALLEL worker processes: the baseline the sweep is compared with."""
    g = spaces.get_grid(grid)
    configs = [{**c, "seed": 0, "max_steps": g.max_steps} for c in g.configs]
    with ProcessPoolExecutor(PARALLEL, mp_context=get_context("spawn")) as pool:
        list(pool.map(_train_one, configs))


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=_env(), cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def overhead(grid: str, reps: int) -> None:
    rows = []
    for rep in range(reps):  # interleaved: the machine is shared, so load drifts between runs
        plain = _timed([sys.executable, __file__, "plain-loop", "--grid", grid])
        with tempfile.TemporaryDirectory() as storage:
            sweep = _timed([sys.executable, "-m", "tune_adder.sweep", "--grid", grid, "--storage", storage, "--quiet"])
            exp = next(Path(storage).iterdir())
            fit_s = json.loads((exp / "experiment.json").read_text())["sessions"][0]["wall_time_s"]
        rows.append((rep, plain, sweep, fit_s))
        print(f"rep {rep}: plain loop {plain:.1f} s, sweep {sweep:.1f} s (Tuner.fit + frames {fit_s:.1f} s)", flush=True)
    print(f"\n| rep | plain `fit` loop ({PARALLEL} procs) | sweep end to end | ratio | sweep from Tuner.fit on | ratio |")
    print("|---|---|---|---|---|---|")
    for rep, plain, sweep, fit_s in rows:
        print(f"| {rep} | {plain:.1f} s | {sweep:.1f} s | {sweep / plain:.2f}x | {fit_s:.1f} s | {fit_s / plain:.2f}x |")


# ---- (b) ASHA vs FIFO -------------------------------------------------------------------------
def _config_key(config: dict) -> tuple:
    return tuple(config.get(c) for c in CONFIG_COLUMNS)


def _leader(state: dict) -> tuple | None:
    """The config ranked first now: best val_exact_match, then fewest steps to solve (as the summary ranks)."""
    if not state:
        return None
    return min(state, key=lambda k: (-state[k]["best"], state[k]["solve"]))


def found_timeline(records) -> tuple[dict, list[tuple[float, int, tuple]]]:
    """Replay every report in wall-clock order: (seconds since start, steps spent so far, leader) after each."""
    events = []
    for rec in records:
        for r in rec.reports:
            events.append((r["timestamp"], r.get("time_total_s", 0.0), rec.trial_id, _config_key(rec.config), r))
    events.sort(key=lambda e: (e[0], e[1]))
    start = min(e[0] - e[1] for e in events)  # a trial's first report minus its run time ~ when it started
    steps: dict[str, int] = {}
    state: dict[tuple, dict] = {}
    timeline = []
    for ts, _, trial_id, key, r in events:
        steps[trial_id] = max(steps.get(trial_id, 0), int(r[STEP]))
        s = state.setdefault(key, {"best": 0.0, "solve": float("inf")})
        s["best"] = max(s["best"], r.get(METRIC) or 0.0)
        if r.get(METRIC) == 1.0:
            s["solve"] = min(s["solve"], int(r[STEP]))
        timeline.append((ts - start, sum(steps.values()), _leader(state)))
    return state, timeline


def _found(timeline: list, target: tuple) -> tuple[float, int] | None:
    """When the leader became `target` for good (None if it never did)."""
    found = None
    for t, steps, leader in timeline:
        if leader == target and found is None:
            found = (t, steps)
        elif leader != target:
            found = None
    return found


def _run_sweep(storage: str, scheduler: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, "-m", "tune_adder.sweep", "--grid", args.grid, "--scheduler", scheduler, "--storage", storage,
           "--max-steps", str(args.max_steps), "--eval-every", str(args.eval_every), "--eval-size", str(args.eval_size),
           "--grace-period", str(args.grace_period), "--reduction-factor", str(args.reduction_factor), "--quiet"]  # fmt: skip
    return _timed(cmd)


def asha_vs_fifo(args: argparse.Namespace) -> None:
    from tune_adder.results import load_records
    from tune_adder.storage import Storage

    storage = args.storage or tempfile.mkdtemp(prefix="bench_sweep_")
    runs = {}
    for scheduler in ("fifo", "asha"):
        wall = _run_sweep(storage, scheduler, args)
        st = Storage.from_arg(storage)
        name = next(p.name for p in Path(storage).iterdir() if f"-{scheduler}-" in p.name)
        state, timeline = found_timeline(load_records(st, name))
        runs[scheduler] = (wall, state, timeline)
        print(f"{scheduler}: {wall:.1f} s end to end, {timeline[-1][1]} steps in all", flush=True)
    fifo_best = _leader(runs["fifo"][1])
    print(f"\nFIFO's best config: {dict(zip(CONFIG_COLUMNS, fifo_best))} ({runs['fifo'][1][fifo_best]})")
    print("\n| scheduler | total steps | wall time | found FIFO's best after (steps) | (seconds since start) | its own best |")
    print("|---|---|---|---|---|---|")
    for scheduler, (wall, state, timeline) in runs.items():
        found = _found(timeline, fifo_best)
        own = _leader(state)
        agree = "same" if own == fifo_best else f"differs: {dict(zip(CONFIG_COLUMNS, own))} {state[own]}"
        found_s = f"{found[1]} | {found[0]:.0f} s" if found else "never | -"
        print(f"| {scheduler} | {timeline[-1][1]} | {wall:.0f} s | {found_s} | {agree} |")
    print(f"\nfiles: {storage}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead", help="(a) the quick grid through the sweep vs a plain fit loop")
    o.add_argument("--grid", default="quick")
    o.add_argument("--reps", type=int, default=2)
    pl = sub.add_parser("plain-loop", help="internal: the baseline loop")
    pl.add_argument("--grid", default="quick")
    a = sub.add_parser("asha", help="(b) ASHA vs FIFO on the seed grid")
    a.add_argument("--grid", default="seed")
    a.add_argument("--max-steps", type=int, default=1000)
    a.add_argument("--eval-every", type=int, default=50)
    a.add_argument("--eval-size", type=int, default=2000)
    a.add_argument("--grace-period", type=int, default=100)
    a.add_argument("--reduction-factor", type=float, default=3.0)
    a.add_argument("--storage", help="keep the two experiments here (default: a temporary folder)")
    args = p.parse_args()
    if args.what == "overhead":
        overhead(args.grid, args.reps)
    elif args.what == "plain-loop":
        plain_loop(args.grid)
    else:
        asha_vs_fifo(args)


if __name__ == "__main__":
    main()
