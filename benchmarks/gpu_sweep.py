"""Member-runs per hour of the real sweep on one GPU: one trial per GPU, 0.25 GPU per trial, and packs of 5 seeds
at 1/8 and 1/16 GPU per trial, on the `gpu-slice` grid (every length and cell of `full`).

`benchmarks/gpu_sweep.sh` runs it (it checks torch and CUDA and installs the carried Ray wheels first). Each setting
is one `python -m tune_adder.sweep ... --gpus-per-trial G` on a fresh local Ray, run one after another; a setting
that outlasts its share of the time budget is stopped with SIGTERM (the sweep then writes its frames and exits 130)
and counted as far as it got. Its row goes to `gpu_sweep.md` / `gpu_sweep.json` under --out as soon as it ends.

    member-steps   = sum of steps_trained over the rows of trials.parquet (one row per config and seed, packs included)
    member-steps/s = member-steps / the setting's wall time (the sweep command's, Ray's start and shutdown included)
    member-runs/h  = member-steps/s x 3600 / 1000   (runs of the full grid's 1000 steps)

With --smoke (or GPU_SWEEP_SMOKE=1) it runs two tiny settings on the CPU (gpus-per-trial 0, the quick grid) to
check the whole path on a machine without a GPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tune_adder.paths import check_can_write_under  # noqa: E402
TARGET_RUNS, TARGET_MINUTES, TARGET_RATIO = 720, 10, 15  # issue #8: the full grid x 5 seeds in 10 min on one H100
RUN_STEPS = 1000  # the full grid's steps per run, what member-runs are counted in
STOP_GRACE_S = 30  # after SIGTERM, before the sweep's process group is killed (half that when we are told to stop)
PGID_FILE = "sweep.pgid"  # the running sweep's process group, while it runs
ABORT = threading.Event()  # set by a SIGTERM or Ctrl-C to this script: stop the running setting, keep its row, end


@dataclass(frozen=True)
class Setting:
    label: str
    what: str
    gpus: float
    seeds: int
    pack: str


GPU_SETTINGS = (
    Setting("a", "one trial per GPU", 1.0, 5, "none"),
    Setting("b", "0.25 GPU per trial", 0.25, 5, "none"),
    Setting("c", "packs of 5 seeds, 1/8 GPU per trial", 0.125, 5, "seeds"),
    Setting("d", "packs of 5 seeds, 1/16 GPU per trial", 0.0625, 5, "seeds"),
)
SMOKE_SETTINGS = (
    Setting("a", "smoke: one trial per config and seed, CPU", 0.0, 2, "none"),
    Setting("c", "smoke: packs of 2 seeds, CPU", 0.0, 2, "seeds"),
)


class GpuSampler:
    """nvidia-smi every 0.5 s while a setting runs: peak memory used on the GPU, per process (CUDA context
    included) and in all, and the mean utilisation. Empty where there is no nvidia-smi."""

    def __init__(self) -> None:
        self.total_mb: list[float] = []
        self.util: list[float] = []
        self.per_process_mb: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if shutil.which("nvidia-smi") else None

    @staticmethod
    def _query(*args: str) -> list[list[str]]:
        try:
            out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [[x.strip() for x in line.split(",")] for line in out.strip().splitlines() if line.strip()]

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for row in self._query("--query-gpu=memory.used,utilization.gpu")[:1]:
                try:
                    self.total_mb.append(float(row[0]))
                    self.util.append(float(row[1]))
                except (ValueError, IndexError):
                    pass
            for row in self._query("--query-compute-apps=pid,used_memory"):
                try:
                    pid, mb = int(row[0]), float(row[1])
                except (ValueError, IndexError):
                    continue
                self.per_process_mb[pid] = max(self.per_process_mb.get(pid, 0.0), mb)

    def __enter__(self) -> GpuSampler:
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def summary(self) -> dict:
        return {
            "smi_peak_total_mb": max(self.total_mb, default=None),
            "smi_peak_process_mb": max(self.per_process_mb.values(), default=None),
            "smi_processes": len(self.per_process_mb),
            "smi_mean_util_pct": round(sum(self.util) / len(self.util), 1) if self.util else None,
        }


class Budget:
    """Splits what is left of the time budget evenly over the settings still to run."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def share(self, remaining: int) -> float:
        left = self.end - time.monotonic()
        return max(10.0, left / remaining - 5.0)  # 5 s per setting for the stop and the bookkeeping


def sweep_command(s: Setting, args: argparse.Namespace, storage: Path) -> list[str]:
    return [
        sys.executable, "-m", "tune_adder.sweep", "--grid", args.grid, "--seeds", str(s.seeds), "--pack", s.pack,
        "--gpus-per-trial", f"{s.gpus:g}", "--max-steps", str(args.max_steps), "--eval-every", str(args.eval_every),
        "--eval-size", str(args.eval_size), "--storage", str(storage), "--name", f"setting-{s.label}",
        "--status-every", "15", "--restart",
    ]  # fmt: skip


def run_setting(s: Setting, args: argparse.Namespace, share_s: float) -> dict:
    """Run one setting's sweep, stopping it after share_s seconds; its row of the table."""
    storage = args.out / "sweeps"
    cmd = sweep_command(s, args, storage)
    print(f"\n=== setting {s.label}: {s.what}; stopped after {share_s:.0f} s if not done\n$ {' '.join(cmd)}", flush=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    started, stopped = time.time(), False
    with GpuSampler() as sampler:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)  # its own process group: Ray's processes go with it on a kill
        _write(args.out / PGID_FILE, str(proc.pid))  # for the shell script, should this script be killed
        reader = threading.Thread(target=_copy_lines, args=(proc.stdout, f"[{s.label}] "), daemon=True)
        reader.start()
        while proc.poll() is None and time.time() - started < share_s and not ABORT.is_set():
            time.sleep(0.5)
        if proc.poll() is None:
            stopped = True
            proc.send_signal(signal.SIGTERM)  # the sweep stops its trials and writes its frames (exit 130)
            try:
                proc.wait(timeout=STOP_GRACE_S / (2 if ABORT.is_set() else 1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        (args.out / PGID_FILE).unlink(missing_ok=True)
        reader.join(timeout=10)
        wall = time.time() - started
    row = {**asdict(s), "exit": proc.returncode, "cut": stopped, "share_s": round(share_s, 1), "wall_s": round(wall, 1)}
    row.update(_counts(storage / f"setting-{s.label}", args.max_steps, started))
    row.update(sampler.summary())
    if row.get("member_steps") is not None:
        rate = row["member_steps"] / wall
        row["member_steps_per_s"] = round(rate, 2)
        row["member_runs_per_h"] = round(rate * 3600 / RUN_STEPS, 1)
    return row


def _copy_lines(stream, prefix: str) -> None:
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def _counts(exp: Path, max_steps: int, started: float) -> dict:
    """Member-steps and finished runs from trials.parquet; peak GPU memory per trial and Ray's start from result.json."""
    out: dict = {"member_steps": None}
    trials_file = exp / "trials.parquet"
    if trials_file.exists():
        import pandas as pd

        trials = pd.read_parquet(trials_file)
        out["members"] = len(trials)
        out["member_steps"] = int(trials["steps_trained"].sum())
        out["runs_finished"] = int((trials["steps_trained"] >= max_steps).sum())
    peaks, on_gpu, first_start, ray_trials = [], 0, None, 0
    for result in exp.glob("*/result.json"):
        lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
        if not lines:
            continue
        ray_trials += 1
        mem = [r["gpu_max_memory_allocated_mb"] for r in lines if r.get("gpu_max_memory_allocated_mb") is not None]
        if mem:
            on_gpu += 1
            peaks.append(max(mem))
        begun = lines[0].get("timestamp", 0) - lines[0].get("time_total_s", 0)  # when the trial's function started
        first_start = begun if first_start is None else min(first_start, begun)
    out.update(ray_trials_reported=ray_trials, ray_trials_on_gpu=on_gpu)
    out["peak_alloc_mb_per_trial"] = round(max(peaks), 1) if peaks else None
    out["start_s"] = round(first_start - started, 1) if first_start else None  # to the first trial's start (1 s steps)
    return out


def _cell(v, fmt: str = "{}") -> str:
    return "n/a" if v is None else fmt.format(v)


def table(rows: list[dict], header: dict, smoke: bool) -> str:
    base = next((r for r in rows if r["label"] == "a" and r.get("member_runs_per_h")), None)
    lines = [
        f"# GPU sweep: member-runs per hour{' (SMOKE on CPU: numbers mean nothing)' if smoke else ''}",
        "",
        *(f"- {k}: {v}" for k, v in header.items()),
        "",
        "| setting | GPU / trial | pack | member-steps | runs done / members | wall (s) | to 1st trial (s) | member-steps / s "
        "| member-runs of 1000 steps / h | x (a) | min for 720 runs | peak alloc / trial (MiB) | nvidia-smi peak / process (MiB) "
        "| nvidia-smi peak total (MiB) | mean GPU util (%) | trials on GPU | ended |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        rate = r.get("member_runs_per_h")
        ratio = f"{rate / base['member_runs_per_h']:.1f}" if rate and base else "n/a"
        minutes = f"{TARGET_RUNS / rate * 60:.1f}" if rate else "n/a"
        pack = "none" if r["pack"] == "none" else f"{r['seeds']} seeds"
        ended = ("cut at its share" if r["cut"] else "complete") + ("" if r["exit"] in (0, 130) else f", exit {r['exit']}")
        lines.append(
            f"| ({r['label']}) {r['what']} | {r['gpus']:g} | {pack} | {_cell(r.get('member_steps'))} "
            f"| {_cell(r.get('runs_finished'))} / {_cell(r.get('members'))} | {r['wall_s']} | {_cell(r.get('start_s'))} "
            f"| {_cell(r.get('member_steps_per_s'))} | {_cell(rate)} | {ratio} | {minutes} | {_cell(r.get('peak_alloc_mb_per_trial'))} "
            f"| {_cell(r.get('smi_peak_process_mb'))} | {_cell(r.get('smi_peak_total_mb'))} | {_cell(r.get('smi_mean_util_pct'))} "
            f"| {r.get('ray_trials_on_gpu', 0)} / {r.get('ray_trials_reported', 0)} | {ended} |"
        )
    lines += [
        "",
        "member-steps/s = sum of steps_trained (trials.parquet, one row per config and seed) / the setting's wall time, "
        "Ray's start and shutdown included; member-runs/h = that x 3600 / 1000. A setting cut at its share counts only "
        "the steps reported by then (each member's last evaluation). min for 720 runs = 720 / (member-runs/h) x 60.",
        f"Target (issue #8): the full grid x 5 seeds, {TARGET_RUNS} runs of {RUN_STEPS} steps, in at most {TARGET_MINUTES} min "
        f"on one H100 = {TARGET_RUNS * 60 // TARGET_MINUTES} member-runs/h, and at least {TARGET_RATIO}x setting (a).",
    ]
    return "\n".join(lines) + "\n"


def _header(args: argparse.Namespace, settings) -> dict:
    import torch

    gpu = "none"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    try:
        import ray

        ray_version = ray.__version__
    except Exception as e:  # reported, and the sweeps will fail with the real error
        ray_version = f"not importable ({type(e).__name__})"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return {
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "GPU": gpu, "CPU cores": os.cpu_count(), "Python": sys.version.split()[0],
        "torch": f"{torch.__version__} (CUDA {torch.version.cuda})", "Ray": ray_version, "commit": commit or "unknown",
        "grid": f"{args.grid}, --max-steps {args.max_steps}, --eval-every {args.eval_every}, --eval-size {args.eval_size}",
        "budget": f"{args.budget:g} s for {len(settings)} settings, shared out as they run",
    }  # fmt: skip


def archive(out: Path) -> None:
    """Move the sweeps' small files (frames, experiment.json, Tune's state, each trial's result.json, params.json and
    error.txt; no checkpoints or TensorBoard files) into one
    tar under --out and delete the rest: the device machine hands back at most 8 files."""
    sweeps = out / "sweeps"
    if not sweeps.exists():
        return
    with tarfile.open(out / "gpu_sweep_runs.tar", "a") as tar:
        for path in sorted(sweeps.rglob("*")):
            keep = path.name in ("result.json", "params.json", "error.txt") or path.parent.parent == sweeps
            if path.is_file() and keep and path.stat().st_size < 8 * 2**20:
                tar.add(path, arcname=str(path.relative_to(sweeps)))
    shutil.rmtree(sweeps, ignore_errors=True)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class UsageError(Exception):
    """A flag this benchmark cannot run: one line on stderr and exit 2, before anything is written or started."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def _choose(args: argparse.Namespace) -> tuple[Setting, ...]:
    """The settings to run, every flag checked (the sweep commands parsed, no Ray needed) before anything is written."""
    defaults = ("quick", 20, 10, 200, 120.0) if args.smoke else ("gpu-slice", 200, 50, 2000, 250.0)
    for key, value in zip(("grid", "max_steps", "eval_every", "eval_size", "budget"), defaults):
        setattr(args, key, value if getattr(args, key) is None else getattr(args, key))
    if not (math.isfinite(args.budget) and args.budget > 0):
        raise UsageError(f"--budget {args.budget:g} is not valid; it must be a number of seconds > 0")
    settings = SMOKE_SETTINGS if args.smoke else GPU_SETTINGS
    if args.settings is not None:
        labels, known = args.settings.split(","), [s.label for s in settings]
        if not all(label in known for label in labels):
            raise UsageError(f"--settings {args.settings!r} is not valid; choose labels among {', '.join(known)} "
                             f"(comma-separated){'' if args.smoke else ' (smoke mode has a, c)'}")
        settings = tuple(s for s in settings if s.label in labels)
    if args.seeds is not None:  # e.g. the full study on a lent GPU: --grid full --max-steps 1000 --settings d --seeds 3
        settings = tuple(replace(s, seeds=args.seeds) for s in settings)
    try:
        check_can_write_under(args.out)
    except ValueError as e:
        raise UsageError(f"--out {str(args.out)!r} is not usable: {e}") from None
    # Every command must parse before the first one runs: a typo costs no device time.
    from tune_adder.settings import UsageError as SweepUsageError
    from tune_adder.sweep import parse_settings

    for s in settings:
        try:
            parse_settings(sweep_command(s, args, args.out / "sweeps")[3:])
        except SweepUsageError as err:
            raise UsageError(f"setting {s.label}: {err}") from None
    import torch

    if not args.smoke and not torch.cuda.is_available():  # every GPU setting would fail: nothing would be measured
        raise UsageError("no CUDA device here: the GPU settings need one; --smoke checks the path on the CPU")
    return settings


def _verdict(rows: list[dict]) -> int:
    """0 only when every setting that ran measured something and ended as a sweep should (done, or cut at its share)."""
    failed = [r["label"] for r in rows if r["exit"] not in (0, 130) or not r.get("member_steps")]
    if not rows or failed:
        what = f"settings {', '.join(failed)} failed or measured nothing" if rows else "no setting ran"
        print(f"gpu_sweep.py: {what}; see the log above", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python benchmarks/gpu_sweep.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/gpu_sweep"))
    p.add_argument("--smoke", action="store_true", default=os.environ.get("GPU_SWEEP_SMOKE") == "1",
                   help="two tiny CPU settings (quick grid, 20 steps): checks the path, measures nothing")
    p.add_argument("--settings", help="labels to run, e.g. a,c (default all of the mode's: a-d; smoke a, c)")
    p.add_argument("--grid", help="default gpu-slice (smoke: quick)")
    p.add_argument("--max-steps", type=int, help="default 200 (smoke: 20)")
    p.add_argument("--eval-every", type=int, help="default 50 (smoke: 10)")
    p.add_argument("--eval-size", type=int, help="default 2000 (smoke: 200)")
    p.add_argument("--seeds", type=int, help="seeds of every setting (default each setting's: 5 on the GPU, 2 in smoke)")
    p.add_argument("--budget", type=float, help="seconds for all settings together (default 250; smoke 120)")
    p.add_argument("--archive-only", action="store_true", help=argparse.SUPPRESS)  # the shell script's clean-up
    try:
        args = p.parse_args(argv)
        if args.archive_only:
            archive(args.out)
            return 0
        settings = _choose(args)
    except UsageError as err:  # one line, before any device time is spent and before --out is made
        print(f"gpu_sweep.py: error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    header = _header(args, settings)
    rows: list[dict] = []
    budget = Budget(args.budget)
    # A SIGTERM (the shell script's timeout) or Ctrl-C stops the running setting, which keeps its row; no more start.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: ABORT.set())
    for i, s in enumerate(settings):
        if ABORT.is_set():
            print(f"stopped: settings {', '.join(x.label for x in settings[i:])} not run", flush=True)
            break
        rows.append(run_setting(s, args, budget.share(len(settings) - i)))
        print(json.dumps(rows[-1]), flush=True)
        _write(args.out / "gpu_sweep.json", json.dumps({"header": header, "rows": rows}, indent=2))
        _write(args.out / "gpu_sweep.md", table(rows, header, args.smoke))
        archive(args.out)
    if rows:
        print(f"table: {args.out / 'gpu_sweep.md'}", flush=True)  # gpu_sweep.sh prints it
    return _verdict(rows)


if __name__ == "__main__":
    sys.exit(main())
