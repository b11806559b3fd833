"""Packed-training benchmark: time per member-step of one PackTrainer of K members against K solo Trainers.

Run: `PYTHONPATH=. nice python benchmarks/bench_packed.py [--ks 1 4 16] [--lengths 10 50] [--device cuda]`
(one CPU thread; prints a Markdown table, `--json PATH` saves the rows). On CPU it times this thread's CPU
time, robust to a shared machine; on CUDA the wall time of blocks that end in a device sync.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Callable

import torch

from bench_train_step import _table, interleaved_ms  # noqa: E402  (this folder is on sys.path when run as a script)
from tune_adder.model import ModelConfig
from tune_adder.packed_train import PackTrainer
from tune_adder.train import Trainer, TrainConfig


def block(steps: list[Callable[[], None]], device: torch.device, repeat: int) -> Callable[[], None]:
    """`repeat` rounds of every step function, then a device sync so the block's time is the GPU's too."""

    def run() -> None:
        for _ in range(repeat):
            for step in steps:
                step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def bench(model_cfg: ModelConfig, digits: int, k: int, batch_size: int, reps: int, device: torch.device) -> dict:
    common = dict(digits=digits, lr=1e-3, batch_size=batch_size, steps=10**9, eval_size=10, probe_size=10)
    cfgs = [TrainConfig(**common, seed=seed) for seed in range(k)]
    pack = PackTrainer(model_cfg, cfgs, device=device)
    solos = [Trainer(model_cfg, cfg, device=device) for cfg in cfgs]
    # About the same time per block at every size: a solo round is k steps, a pack step about as long.
    repeat = max(1, 200 // (k * (digits + 1)))
    pack_block = block([pack._train_step], device, repeat)
    solo_block = block([solo._train_step for solo in solos], device, repeat)
    timed = interleaved_ms({"pack": (pack_block, 1), "solo": (solo_block, 1)}, reps)
    clock = "wall" if device.type == "cuda" else "cpu"
    pack_ms = timed["pack"][clock] / repeat / k  # per member-step
    solo_ms = timed["solo"][clock] / repeat / k
    return {"digits": digits, "k": k, "pack_ms": pack_ms, "solo_ms": solo_ms, "speedup": solo_ms / pack_ms, "clock": clock}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16], help="pack sizes")
    p.add_argument("--lengths", type=int, nargs="+", default=[10, 50], help="operand digits")
    p.add_argument("--cell", default="RNN")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--embed-dim", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--reps", type=int, default=5, help="interleaved blocks per variant")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", type=Path, help="also save every row here")
    args = p.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    model_cfg = ModelConfig(cell=args.cell, layers=args.layers, hidden=args.hidden, embed_dim=args.embed_dim)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {where}, 1 CPU thread, {model_cfg}, batch {args.batch_size}", flush=True)
    rows = []
    for digits in args.lengths:
        for k in args.ks:
            rows.append(bench(model_cfg, digits, k, args.batch_size, args.reps, device))
            print(f"  {rows[-1]}", flush=True)
    cols = [("digits", "digits", "d"), ("k", "K", "d"), ("solo_ms", "solo ms/member-step", ".2f")]
    cols += [("pack_ms", "pack ms/member-step", ".2f"), ("speedup", "speedup", ".2f")]
    print(f"\nmedian {rows[0]['clock']} time per member-step, {args.reps} interleaved blocks\n")
    print(_table(rows, cols))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
