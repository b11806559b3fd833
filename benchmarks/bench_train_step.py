"""Training-step benchmark: fit's step vs the course handout's loop, data share, GFLOP/s, and denormal floats.

Run: `nice python benchmarks/bench_train_step.py` (one thread; prints Markdown tables, `--json PATH` saves the rows).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from tune_adder.data import make_batch
from tune_adder.model import AdderRNN, ModelConfig
from tune_adder.train import Trainer, TrainConfig

BATCH = 200
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def handout_step(digits: int, seed: int = 0) -> Callable[[], None]:
    """The course handout's loop: Python-int operands, digits via str(), same model, batch 200, Adam."""
    torch.manual_seed(seed)
    model = AdderRNN(ModelConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = random.Random(seed)  # np.random.randint overflows past 18 digits; Python's ints do not
    bound = 10**digits * 5555 // 10000

    def to_digits(n: int) -> list[int]:
        s = str(n)[::-1]
        return [int(c) for c in s] + [0] * (digits + 1 - len(s))

    def step() -> None:
        nums1 = [rng.randrange(bound) for _ in range(BATCH)]
        nums2 = [rng.randrange(bound) for _ in range(BATCH)]
        x1 = torch.tensor([to_digits(n) for n in nums1])
        x2 = torch.tensor([to_digits(n) for n in nums2])
        y = torch.tensor([to_digits(a + b) for a, b in zip(nums1, nums2)])
        logits = model(x1, x2)
        loss = F.cross_entropy(logits.view(-1, 10), y.view(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def fit_parts(digits: int) -> dict[str, Callable[[], object]]:
    """fit's own training step (Trainer._train_step, the code fit runs), its data making alone, and
    one evaluation (held-out set and both probes, as fit does every eval_every steps)."""
    trainer = Trainer(ModelConfig(), TrainConfig(digits=digits, steps=10**9), device="cpu")
    rng = torch.Generator().manual_seed(1)
    return {
        "fit": trainer._train_step,
        "data": lambda: make_batch(BATCH, digits, generator=rng),
        "eval": lambda: trainer._evaluate(0.0, 0.0),
    }


def interleaved_ms(fns: dict[str, tuple[Callable[[], object], int]], reps: int) -> dict[str, dict[str, float]]:
    """Median ms per call of each (function, calls per block), timed in alternating blocks so machine
    load hits all alike: "cpu" is this thread's CPU time (robust to time slices lost to other work
    on a shared machine; PyTorch computes on this thread with one thread), "wall" the elapsed time."""
    for fn, _ in fns.values():
        fn()  # warm-up
    times: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "wall": []} for name in fns}
    for _ in range(reps):
        for name, (fn, per_block) in fns.items():
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(per_block):
                fn()
            times[name]["cpu"].append((time.thread_time() - cpu) / per_block * 1e3)
            times[name]["wall"].append((time.perf_counter() - wall) / per_block * 1e3)
    return {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}


def step_flops(digits: int, cfg: ModelConfig = ModelConfig()) -> float:
    """Matmul FLOPs of one training step: input and recurrent matmuls of every layer plus the head,
    forward (2*m*n*k each) and backward (twice the forward: gradients of inputs and of weights)."""
    steps = digits + 1
    g, h = GATES[cfg.cell], cfg.hidden
    layer_inputs = [2 * cfg.embed_dim] + [h] * (cfg.layers - 1)
    forward = sum(2 * BATCH * g * h * (n_in + h) for n_in in layer_inputs) + 2 * BATCH * h * cfg.base
    return 3 * forward * steps


def plain_matmul_gflops(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """GFLOP/s (per CPU second of this thread) of one (m, k) @ (k, n) matmul repeated: the ceiling for
    the recurrent matmul."""
    x, w = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    calls, start = 0, time.thread_time()
    while time.thread_time() - start < seconds:
        for _ in range(100):
            torch.mm(x, w, out=out)
        calls += 100
    return 2 * m * k * n * calls / (time.thread_time() - start) / 1e9


def bench_steps(lengths: list[int], reps: int) -> list[dict]:
    rows = []
    for digits in lengths:
        per_block = max(2, 1000 // (digits + 1))  # about the same time per block at every length
        parts = fit_parts(digits)
        fns = {"fit": (parts["fit"], per_block), "handout": (handout_step(digits), per_block)}
        fns |= {"data": (parts["data"], per_block), "eval": (parts["eval"], max(1, per_block // 10))}
        timed = interleaved_ms(fns, reps)
        ms = {name: t["cpu"] for name, t in timed.items()}
        eval_every = TrainConfig().eval_every
        rows.append(
            {
                "digits": digits,
                "fit_ms": ms["fit"],
                "handout_ms": ms["handout"],
                "speedup": ms["handout"] / ms["fit"],
                "speedup_wall": timed["handout"]["wall"] / timed["fit"]["wall"],
                "data_ms": ms["data"],
                "data_share": ms["data"] / ms["fit"],
                "eval_ms": ms["eval"],
                "eval_share": ms["eval"] / (ms["eval"] + eval_every * ms["fit"]),
                "step_mflop": step_flops(digits) / 1e6,
                "fit_gflops": step_flops(digits) / (ms["fit"] / 1e3) / 1e9,
                "wall_ms": {name: t["wall"] for name, t in timed.items()},
            }
        )
        print(f"  {digits} digits: {rows[-1]}", flush=True)
    return rows


def subnormal_share(trainer: Trainer) -> float:
    """Share of non-zero values in the weights, their gradients and Adam's moments that are subnormal floats."""
    tensors = [t for p in trainer.model.parameters() for t in (p, p.grad) if t is not None]
    tensors += [v for s in trainer.optimizer.state.values() for v in s.values() if v.dim() > 0]
    tiny = torch.finfo(torch.float32).tiny
    sub = sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in tensors)
    nonzero = sum(int((t != 0).sum()) for t in tensors)
    return sub / max(nonzero, 1)


def bench_denormals(steps: int, digits: int) -> dict:
    """LSTM, 2 layers, lr 0.1: the same run with denormals kept and flushed, blocks interleaved."""
    cfg_m = ModelConfig(cell="LSTM", layers=2)
    cfg_t = TrainConfig(digits=digits, lr=0.1, steps=steps, eval_every=50)
    runs = {flush: Trainer(cfg_m, cfg_t, device="cpu") for flush in (False, True)}
    gens = {flush: trainer.run() for flush, trainer in runs.items()}
    speeds: dict[bool, list[float]] = {False: [], True: []}  # wall ms per training step, eval excluded
    cpu_ms: dict[bool, list[float]] = {False: [], True: []}  # CPU ms per step, eval included
    last: dict[bool, object] = {}
    subnormal_max = 0.0
    for _ in range(-(-steps // cfg_t.eval_every)):
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            cpu = time.thread_time()
            last[flush] = next(gens[flush])
            cpu_ms[flush].append((time.thread_time() - cpu) * 1e3 / cfg_t.eval_every)
            speeds[flush].append(1e3 / last[flush].steps_per_s)
            if not flush:
                subnormal_max = max(subnormal_max, subnormal_share(runs[False]))
    torch.set_flush_denormal(True)
    ratios = [kept / flushed for kept, flushed in zip(speeds[False], speeds[True])]
    return {
        "digits": digits,
        "steps": steps,
        "ms_per_step_kept": statistics.median(speeds[False]),
        "ms_per_step_flushed": statistics.median(speeds[True]),
        "slowdown_median": statistics.median(ratios),
        "slowdown_max_block": max(ratios),
        "slowdown_last_quarter": statistics.median(ratios[-max(1, len(ratios) // 4) :]),
        "cpu_ms_per_step_kept": statistics.median(cpu_ms[False]),
        "cpu_ms_per_step_flushed": statistics.median(cpu_ms[True]),
        "cpu_slowdown_median": statistics.median(k / f for k, f in zip(cpu_ms[False], cpu_ms[True])),
        "subnormal_share_max": subnormal_max,
        "final_kept": last[False].as_dict(),
        "final_flushed": last[True].as_dict(),
    }


def _table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(title for _, title, _ in cols) + " |"
    rule = "|" + "|".join(" ---: " for _ in cols) + "|"
    body = ["| " + " | ".join(format(r[key], fmt) for key, _, fmt in cols) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[10, 20, 50, 100])
    p.add_argument("--reps", type=int, default=9, help="interleaved blocks per variant and length")
    p.add_argument("--denormal-steps", type=int, default=1000, help="0 skips the denormal run")
    p.add_argument("--json", type=Path, help="also save every row here")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread", flush=True)

    steps = bench_steps(args.lengths, args.reps)
    shape = (BATCH, 64, 64)
    matmul = plain_matmul_gflops(*shape)
    denormal = bench_denormals(args.denormal_steps, digits=10) if args.denormal_steps > 0 else None

    print("\nCPU ms per call (median of interleaved blocks), batch 200, seed model, Adam:\n")
    print(
        _table(
            steps,
            [
                ("digits", "digits", "d"),
                ("handout_ms", "handout loop ms", ".2f"),
                ("fit_ms", "fit ms", ".2f"),
                ("speedup", "handout / fit", ".2f"),
                ("speedup_wall", "(wall-clock)", ".2f"),
                ("data_ms", "fit data ms", ".3f"),
                ("data_share", "data share", ".1%"),
                ("eval_share", "eval share", ".1%"),
                ("step_mflop", "MFLOP/step", ".0f"),
                ("fit_gflops", "fit GFLOP/s", ".1f"),
            ],
        )
    )
    print(f"\nplain {shape[0]}x{shape[1]} @ {shape[1]}x{shape[2]} matmul on the same thread: {matmul:.1f} GFLOP/s")
    if denormal is not None:
        print(f"\ndenormals (LSTM, 2 layers, lr 0.1, 10 digits): {json.dumps(denormal, indent=1)}")
    if args.json:
        args.json.write_text(json.dumps({"steps": steps, "matmul_gflops": matmul, "denormal": denormal}, indent=1))


if __name__ == "__main__":
    main()
