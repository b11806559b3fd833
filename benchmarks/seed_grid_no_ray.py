"""The seed grid x seeds trained without Ray, in parallel worker processes, into the sweep's own frames.

For a machine without Ray (the lent GPU box): same grid (tune_adder.spaces), same trainer (tune_adder.train),
same frame builders (tune_adder.frames). Usage: python benchmarks/seed_grid_no_ray.py OUT_DIR [--seeds 3] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tune_adder.frames import STOP_REASON_KEY, TERMINATED, TrialRecord, history_frame, trials_frame  # noqa: E402
from tune_adder.spaces import get_grid  # noqa: E402


def train_one(job: tuple[int, dict, dict]) -> TrialRecord:
    import torch

    from tune_adder.model import ModelConfig
    from tune_adder.train import Trainer, TrainConfig

    index, config, run = job
    torch.set_num_threads(1)
    model_cfg = ModelConfig(**{k: config[k] for k in ("base", "embed_dim", "hidden", "layers", "cell")})
    train_cfg = TrainConfig(digits=config["digits"], lr=config["lr"], batch_size=config["batch_size"], steps=config["max_steps"],
                            seed=config["seed"], eval_every=run["eval_every"], eval_size=run["eval_size"], device=run["device"])
    trainer, reports, start = Trainer(model_cfg, train_cfg), [], time.perf_counter()
    for result in trainer.run():
        reports.append({**result.as_dict(), STOP_REASON_KEY: "running", "time_total_s": time.perf_counter() - start})
    reports[-1][STOP_REASON_KEY] = trainer.stopped_reason
    return TrialRecord(f"seed_{index:05d}", config, TERMINATED, reports)


def write(out: Path, records: list[TrialRecord], settings: dict) -> None:
    for name, frame in (("history.parquet", history_frame(records)), ("trials.parquet", trials_frame(records))):
        frame.to_parquet(out / f".{name}", index=False)
        os.replace(out / f".{name}", out / name)
    (out / "experiment.json").write_text(json.dumps(settings, indent=2))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--grid", default="seed")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-size", type=int, default=2000)
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int, help="only the first N trials (a smoke run)")
    a = p.parse_args()
    grid = get_grid(a.grid)
    max_steps = a.max_steps or grid.max_steps
    configs = [{**c, "seed": s, "max_steps": max_steps} for s in range(a.seeds) for c in grid.configs][: a.limit]
    run = {"eval_every": a.eval_every, "eval_size": a.eval_size, "device": a.device}
    a.out.mkdir(parents=True, exist_ok=True)
    settings = {"name": a.out.name, "grid": a.grid, "search": "grid", "scheduler": "fifo", "seeds": a.seeds, "max_steps": max_steps,
                "stop_when_solved": False, **run, "num_trials": len(configs), "workers": a.workers,
                "command": " ".join(sys.argv), "driver": "benchmarks/seed_grid_no_ray.py (no Ray)", "status": "running",
                "start_time": time.strftime("%Y-%m-%dT%H:%M:%S"), "end_time": None, "wall_time_s": None}
    started, records = time.time(), []
    # Longest trials first (long operands, gated cells) so the pool does not end on one straggler.
    jobs = sorted(enumerate(configs), key=lambda j: -j[1]["digits"] * (1 + (j[1]["cell"] != "RNN")) * j[1]["layers"])
    with mp.get_context("spawn").Pool(a.workers) as pool:
        for record in pool.imap_unordered(train_one, [(i, c, run) for i, c in jobs]):
            records.append(record)
            print(f"{len(records)}/{len(configs)} {time.time() - started:.0f}s {record.config}", flush=True)
            if len(records) % 10 == 0:
                write(a.out, records, settings)  # partial frames if the call is cut short
    settings.update(status="completed", end_time=time.strftime("%Y-%m-%dT%H:%M:%S"), wall_time_s=round(time.time() - started, 1))
    write(a.out, records, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
