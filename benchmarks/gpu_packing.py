"""How many quick-grid trials per hour one GPU gives at 1, 0.5 and 0.25 GPU per trial, and each trial's peak memory.

`benchmarks/gpu_packing.sh` runs it. With Ray importable it runs the real sweep (`--gpus-per-trial G`);
without Ray (a bare torch machine) it packs the same trials as 1/G concurrent processes on the one GPU,
which is what Ray's fractional GPUs do: share the device, nothing more.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _trial_configs(seeds: int, max_steps: int | None) -> list[dict]:
    from tune_adder.spaces import get_grid

    grid = get_grid("quick")
    steps = max_steps or grid.max_steps
    return [{**cfg, "seed": seed, "max_steps": steps} for seed in range(seeds) for cfg in grid.configs]


def one_trial(config: dict) -> dict:
    """Train one flat config on cuda (when there is one) in this process; its wall time and peak memory."""
    import torch

    from tune_adder.configs import to_configs
    from tune_adder.train import Trainer

    model_cfg, train_cfg, _ = to_configs(config)
    started = time.perf_counter()
    trainer = Trainer(model_cfg, train_cfg)
    last = None
    for last in trainer.run():
        pass
    cuda = trainer.device.type == "cuda"
    return {
        "device": str(trainer.device),
        "wall_s": time.perf_counter() - started,
        "steps": last.step,
        "val_exact_match": last.val_exact_match,
        "max_memory_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "max_memory_reserved_mb": torch.cuda.max_memory_reserved() / 2**20 if cuda else None,
    }


class _SmiSampler:
    """Peak nvidia-smi memory per process (CUDA context included), sampled every 0.5 s."""

    def __init__(self) -> None:
        self.peak_mb: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if shutil.which("nvidia-smi") else None

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout
            for line in out.strip().splitlines():
                try:
                    pid, mb = (x.strip() for x in line.split(","))
                    self.peak_mb[int(pid)] = max(self.peak_mb.get(int(pid), 0.0), float(mb))
                except ValueError:
                    continue

    def __enter__(self) -> _SmiSampler:
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


def _run_in_process(config: dict, python: str, sampler: _SmiSampler) -> dict:
    proc = subprocess.Popen([python, str(Path(__file__)), "--one-trial", json.dumps(config)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"trial {config} failed with exit {proc.returncode}")
    row = json.loads(out.strip().splitlines()[-1])
    row["smi_peak_mb"] = sampler.peak_mb.get(proc.pid)
    return row


def packed_processes(configs: list[dict], gpus_per_trial: float, python: str) -> dict:
    """Run every config as its own process, round(1/gpus_per_trial) at a time on the one GPU."""
    slots = max(1, round(1 / gpus_per_trial))
    with _SmiSampler() as sampler:
        started = time.perf_counter()
        with ThreadPoolExecutor(slots) as pool:
            rows = list(pool.map(lambda c: _run_in_process(c, python, sampler), configs))
        wall = time.perf_counter() - started
    return {"mode": "processes", "concurrent": slots, "wall_s": wall, "trials": rows}


def ray_sweep(configs: list[dict], gpus_per_trial: float, seeds: int, max_steps: int | None) -> dict:
    """The real sweep on a local Ray with this GPU; per-trial memory from what the trainable reports."""
    import pandas as pd

    storage = tempfile.mkdtemp(prefix="gpu_packing_")
    cmd = [sys.executable, "-m", "tune_adder.sweep", "--grid", "quick", "--storage", storage,
           "--gpus-per-trial", str(gpus_per_trial), "--seeds", str(seeds)]
    if max_steps:
        cmd += ["--max-steps", str(max_steps)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    wall = time.perf_counter() - started
    rows = []
    for result in Path(storage).rglob("result.json"):
        lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
        mem = [r.get("gpu_max_memory_allocated_mb") for r in lines if r.get("gpu_max_memory_allocated_mb") is not None]
        rows.append({"max_memory_allocated_mb": max(mem) if mem else None, "steps": lines[-1].get("step") if lines else None})
    shutil.rmtree(storage, ignore_errors=True)
    return {"mode": "ray", "concurrent": round(1 / gpus_per_trial), "wall_s": wall, "trials": rows,
            "note": f"{len(configs)} trials; wall time includes Ray start-up (pd {pd.__version__})"}


def _summary(gpus: float, run: dict) -> dict:
    def peak(key: str) -> float | None:
        vals = [t[key] for t in run["trials"] if t.get(key) is not None]
        return round(max(vals), 1) if vals else None

    n = len(run["trials"])
    return {
        "gpus_per_trial": gpus, "mode": run["mode"], "concurrent_trials": run["concurrent"], "trials": n,
        "wall_s": round(run["wall_s"], 1), "trials_per_hour": round(n / run["wall_s"] * 3600),
        "peak_allocated_mb_per_trial": peak("max_memory_allocated_mb"), "peak_smi_mb_per_trial": peak("smi_peak_mb"),
        "device": (run["trials"][0].get("device") if run["trials"] else None),
    }


def _table(rows: list[dict], gpu_name: str) -> str:
    head = ("| GPU per trial | trials at once | trials | wall (s) | trials / hour | peak allocated / trial (MiB) "
            "| peak nvidia-smi / trial (MiB) | mode |\n|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['gpus_per_trial']} | {r['concurrent_trials']} | {r['trials']} | {r['wall_s']} | {r['trials_per_hour']} "
        f"| {r['peak_allocated_mb_per_trial']} | {r['peak_smi_mb_per_trial']} | {r['mode']} |\n" for r in rows
    )
    return f"GPU: {gpu_name}\n\n{head}{body}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_packing.py", description=__doc__)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_packing"))
    p.add_argument("--gpus-per-trial", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    p.add_argument("--seeds", type=int, default=1, help="quick grid x this many seeds = trials per setting (default 1: 8 trials)")
    p.add_argument("--max-steps", type=int, default=None, help="override the quick grid's steps per trial")
    p.add_argument("--mode", choices=("auto", "ray", "processes"), default="auto")
    p.add_argument("--one-trial", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one_trial:
        print(json.dumps(one_trial(json.loads(args.one_trial))))
        return 0
    mode = args.mode
    if mode == "auto":
        mode = "ray" if all(_importable(m) for m in ("ray.tune", "optuna", "pyarrow")) else "processes"
    configs = _trial_configs(args.seeds, args.max_steps)
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True,
                         text=True).stdout.strip() if shutil.which("nvidia-smi") else "none (nvidia-smi not found)"
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for g in args.gpus_per_trial:
        run = ray_sweep(configs, g, args.seeds, args.max_steps) if mode == "ray" else packed_processes(configs, g, sys.executable)
        rows.append(_summary(g, run))
        print(json.dumps(rows[-1]), flush=True)
        # Written after every setting, so a run cut short by the time limit still leaves its table.
        _write(args.out / "gpu_packing.json", json.dumps({"gpu": gpu, "python": sys.version, "rows": rows}, indent=2))
        _write(args.out / "gpu_packing.md", _table(rows, gpu))
    print(_table(rows, gpu))
    return 0


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:
        return False


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
