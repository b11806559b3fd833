"""What the length-generalisation probes cost a trial that ASHA cuts: the full ladder against the ladder that stops
each kind at its first failing rung (tune_adder/probes.py), on the same trained weights, in the same run.

Each config of the grid is trained as a trial would be up to `--steps` (ASHA's grace period, 50 by default: where
the sweep's `--grid full --scheduler asha` cuts most trials), then both ladders are timed on its weights, in
alternating order, on one thread (a trial's one CPU). Prints a Markdown table per trained length and the totals;
`--json PATH` keeps every row.

Run: `PYTHONPATH=. nice python benchmarks/bench_probes.py` (the full grid, seed 0: about 10 minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from tune_adder import generalisation, metrics, probes, spaces
from tune_adder.configs import to_configs
from tune_adder.data import AdderBatch
from tune_adder.train import OneLineParser, Trainer, _score


def full_ladder(score, base: int) -> dict[str, float]:
    """The ladder as it was before issue 18 item 17: every rung of both kinds, whatever fails below it."""
    return {metrics.probe_column(kind, length): score(batch) for (kind, length), batch in probes.probe_sets(base).items()}


def _timed(run) -> tuple[float, dict]:
    started = time.perf_counter()
    found = run()
    return time.perf_counter() - started, found


def measure(config: dict, steps: int) -> dict:
    """Train `config` (seed 0) for `steps`, then time both ladders on its weights (each twice, alternating)."""
    torch.set_num_threads(1)  # a trial's one CPU (two threads on a busy 2-core box spin: 100x slower seen here)
    model_cfg, train_cfg, _ = to_configs({**config, "seed": 0, "max_steps": steps, "eval_every": steps})
    trainer = Trainer(model_cfg, train_cfg, device="cpu")
    for _ in trainer.run():
        pass
    model = trainer.model.eval()

    def score(batch: AdderBatch) -> float:
        return _score(model, batch)[1]

    with torch.inference_mode():
        times = {"full": [], "stopped": []}
        for order in (("full", "stopped"), ("stopped", "full")):
            for name in order:
                run = (lambda: full_ladder(score, model_cfg.base)) if name == "full" else (
                    lambda: probes.run_probes(score, model_cfg.base, torch.device("cpu")))
                seconds, found = _timed(run)
                times[name].append(seconds)
                if name == "stopped":
                    stopped = found
                else:
                    everything = found
    passed = {column: generalisation.passes(value) for column, value in everything.items()}
    # The stopped ladder measures exactly the rungs up to each kind's first failure, with the full ladder's values.
    assert all(stopped[c] == everything[c] for c in stopped if stopped[c] == stopped[c]), config
    return {**{k: config[k] for k in ("digits", "lr", "layers", "cell")}, "steps": steps,
            "full_s": min(times["full"]), "stopped_s": min(times["stopped"]),
            "rungs_probed": sum(v == v for v in stopped.values()), "rungs_passed": sum(passed.values())}


def table(rows: list[dict]) -> str:
    lines = ["| trained digits | trials | rungs probed (of 6), median | full ladder, s (sum) | stopped ladder, s (sum) | ratio |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for digits in sorted({r["digits"] for r in rows}) + ["all"]:
        part = [r for r in rows if digits == "all" or r["digits"] == digits]
        full, stopped = sum(r["full_s"] for r in part), sum(r["stopped_s"] for r in part)
        lines.append(f"| {digits} | {len(part)} | {statistics.median(r['rungs_probed'] for r in part):g} | {full:.1f} | "
                     f"{stopped:.1f} | {stopped / full:.2f}x |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog="bench_probes.py", description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="full", help="a named grid of tune_adder/spaces.py (default: full)")
    p.add_argument("--digits", type=int, default=None, help="only this trained length of the grid")
    p.add_argument("--steps", type=int, default=50, help="training steps before the probes (default 50: ASHA's grace period)")
    p.add_argument("--json", type=Path, default=None, help="write every row here as JSON")
    args = p.parse_args(argv)
    if args.grid not in spaces.GRIDS:
        p.error(f"--grid {args.grid!r} is not a grid; choose one of {', '.join(spaces.GRIDS)}")
    if args.steps < 1:
        p.error(f"--steps {args.steps} is invalid; it must be >= 1")
    if args.digits is not None and args.digits not in spaces.grid_lengths(args.grid):
        p.error(f"--digits {args.digits} is not a length of grid {args.grid!r}; choose one of "
                f"{', '.join(map(str, spaces.grid_lengths(args.grid)))}")
    if args.json is not None and args.json.is_dir():
        p.error(f"--json {args.json} is a folder; give a file path")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    configs = spaces.grid_configs(args.grid, args.digits)
    rows = []
    for i, config in enumerate(configs, 1):
        rows.append(measure(config, args.steps))
        print(f"[{i}/{len(configs)}] {rows[-1]}", file=sys.stderr, flush=True)
    print(f"Probe ladder after {args.steps} training steps, grid {args.grid}, seed 0, one thread; "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    print(table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
