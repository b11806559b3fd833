"""Retrain the study's adders from their recorded config and seed, check each evaluation against the recorded
history, and measure their margin profiles and per-layer carry probes (issue 19); one output row per adder.

    nice python analysis/mechanism_retrain.py data/full-seeds3 data/more-seeds/*/ --digits 10,20 \
        --out ~/runs/margins/margins.parquet

Resumable: adders already in --out are skipped, and each new row is written atomically (temp file + rename).
Where the experiment folder still holds Tune's trial folders (a sweep's own folder, not the committed frames), the
checkpoint at the trial's last trained step is the adder itself: its weights are used and nothing is retrained
(column `weights`: checkpoint / retrained; `--retrain` retrains anyway).
CPU, one thread, as the committed study trained. Training is deterministic per seed on one kind of CPU, but another
kind rounds differently (data/more-seeds was trained on an AMD EPYC, data/full-seeds3 on an Intel Xeon: retrained on
the other, val_loss differs by ~1e-7 from the first evaluation on), so every evaluation is checked against the
recorded history, the row names the CPU (column `cpu`), and the retrained adder's own probe ladder is measured too:
the margins describe the retrained adder, which may differ from the recorded one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tune_adder import margins  # noqa: E402
from tune_adder.configs import to_configs  # noqa: E402
from tune_adder.data import carry_chain_batch, make_batch  # noqa: E402
from tune_adder.train import Trainer, load_state, save_state  # noqa: E402

CONFIG_KEYS = ("digits", "lr", "layers", "cell", "hidden", "embed_dim", "batch_size", "base", "seed", "max_steps")
# Each evaluation of the retrained adder is compared with the recorded row on these (exact float equality).
CHECKED = ("val_exact_match", "val_loss", "train_loss", "val_digit_acc", "carry_chain_exact_match", "longer_exact_match")
MARGIN_SEED = 20261201  # the long sums of the margin profile and the probe, the same for every adder
KEY = ("experiment", "trial_id")


def long_sums(digits: int, base: int, factor: int, chains: int, uniform: int, probe_rows: int) -> dict:
    """The fixed sums of one trained length: carry chains and uniform sums of factor x digits, and uniform sums
    of the trained length to fit the carry probe on."""
    rng = torch.Generator().manual_seed(MARGIN_SEED + digits)
    return {
        "chain": carry_chain_batch(chains, factor * digits, base=base, generator=rng),
        "uniform": make_batch(uniform, factor * digits, base=base, split="uniform", generator=rng),
        "probe_train": make_batch(probe_rows, digits, base=base, split="uniform", generator=rng),
    }


def config_of(row: pd.Series) -> dict:
    """The adder's recorded config as plain Python values."""
    return {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in CONFIG_KEYS}


def retrain(row: pd.Series, settings: dict, state: dict | None = None) -> tuple[Trainer, list]:
    """The adder retrained from its config and seed, with its evaluations; or, given its saved final `state`, the
    adder itself with no training (and no evaluations)."""
    config = config_of(row)
    config |= {"eval_every": int(settings.get("eval_every", 50)), "eval_size": int(settings.get("eval_size", 2000))}
    if pd.notna(row.get("steps_trained")):  # a trial cut early (ASHA, solved) ended there: the data stream and Adam
        config["max_steps"] = int(row["steps_trained"])  # depend on the step alone, so its first steps are the run
    model_cfg, train_cfg, _ = to_configs(config)
    trainer = Trainer(model_cfg, train_cfg, state=state, device="cpu")
    return trainer, [] if state is not None else list(trainer.run())


def saved_final_state(folder: Path, trial_id: str, steps_trained: int) -> dict | None:
    """The trainer state a sweep checkpointed at the trial's last trained step (its final weights), if the experiment
    folder still holds Tune's trial folders; None otherwise (the committed datasets keep only the frames)."""
    from tune_adder.trainable import META_FILE, STATE_FILE  # imports Ray: only here

    for meta_path in sorted(folder.glob(f"*_{trial_id}_*/checkpoint_*/{META_FILE}"), reverse=True):
        try:
            step = json.loads(meta_path.read_text())["metrics"]["step"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if step == steps_trained:
            state = load_state(meta_path.with_name(STATE_FILE))
            return state if "model" in state else None  # a trial pack's checkpoint holds the whole pack
    return None


def compare(evals: list, recorded: pd.DataFrame) -> dict:
    """How the retrained evaluations match the recorded history rows of the trial (exact equality per column)."""
    recorded = recorded.sort_values("step").set_index("step")
    steps = [e.step for e in evals]
    out = {"retrain_evals": len(evals), "recorded_evals": len(recorded),
           "retrain_same_steps": steps == list(recorded.index)}
    mismatched, first = 0, math.nan
    for e in evals:
        if e.step not in recorded.index:
            mismatched += 1
            first = e.step if math.isnan(first) else first
            continue
        rec = recorded.loc[e.step]
        if any(getattr(e, c) != rec[c] for c in CHECKED):
            mismatched += 1
            first = e.step if math.isnan(first) else first
    out["retrain_mismatched_evals"] = mismatched
    out["retrain_first_mismatch_step"] = first
    common = [e for e in evals if e.step in recorded.index]
    for c in ("val_loss", "val_exact_match"):
        diffs = [abs(getattr(e, c) - recorded.loc[e.step, c]) for e in common]
        out[f"retrain_max_abs_diff_{c}"] = float(max(diffs)) if diffs else math.nan
    out["retrain_matched"] = bool(out["retrain_same_steps"] and mismatched == 0)
    return out


def profile_columns(model, sums: dict, digits: int) -> dict:
    out = {}
    for kind in ("chain", "uniform"):
        profile = margins.margin_profile(model, sums[kind])
        out |= margins.summarise(profile, digits, prefix=f"{kind}_")
        out[f"{kind}_worst_profile"] = profile.worst.double().numpy().round(5).tolist()
        out[f"{kind}_median_profile"] = profile.median.double().numpy().round(5).tolist()
        out[f"{kind}_first_wrong"] = profile.first_wrong.tolist()
    return out


def carry_probe_columns(model, sums: dict, digits: int, base: int) -> dict:
    """Per layer k (1 = bottom) and state (h; c for LSTMs): a logistic probe of the carry handed on, fitted on
    uniform sums of the trained length, scored along long carry chains and uniform sums."""
    model.eval()
    train = sums["probe_train"]
    fit_states = margins.layer_states(model, train.a, train.b)
    scored = {kind: (margins.layer_states(model, sums[kind].a, sums[kind].b), margins.carry_in(sums[kind], base))
              for kind in ("chain", "uniform")}
    out = {}
    for k, layer in enumerate(fit_states):
        for state in layer:
            name = f"carry_l{k + 1}_{state}"
            train_x, train_y = margins.handed_on(layer[state], margins.carry_in(train, base))
            try:
                probe = margins.fit_carry_probe(train_x, train_y)
            except ValueError:
                continue
            out[f"{name}_train_acc"] = float((margins.probe_margins(probe, train_x, train_y) > 0).mean())
            for kind, (states, carries) in scored.items():
                found = margins.probe_margins(probe, *margins.handed_on(states[k][state], carries))  # (rows, T-1)
                beyond = found[:, digits:]  # handed to positions > digits: beyond the trained sums
                out[f"{name}_{kind}_acc"] = float((found > 0).mean())
                out[f"{name}_{kind}_acc_beyond"] = float((beyond > 0).mean())
                out[f"{name}_{kind}_margin_median_beyond"] = float(np.median(beyond))
                out[f"{name}_{kind}_margin_worst_beyond"] = float(beyond.min())
                if kind == "chain":
                    out[f"{name}_chain_acc_profile"] = (found > 0).mean(axis=0).round(4).tolist()
                    out[f"{name}_chain_median_margin_profile"] = np.median(found, axis=0).round(4).tolist()
    return out


def write_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1], check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    """The processor's name: a retrain matches its history bit for bit only on the kind of CPU that trained it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def todo(folders: list[Path], digits: set[int] | None, cells: set[str] | None, layers: set[int] | None) -> list:
    """(experiment name, settings, trial row, recorded history) for every selected adder, cheapest first."""
    found = []
    for folder in folders:
        settings = json.loads((folder / "experiment.json").read_text()) if (folder / "experiment.json").exists() else {}
        trials, history = pd.read_parquet(folder / "trials.parquet"), pd.read_parquet(folder / "history.parquet")
        by_trial = dict(tuple(history.groupby("trial_id")))
        for _, row in trials.iterrows():
            if (digits and row["digits"] not in digits) or (cells and row["cell"] not in cells) \
                    or (layers and row["layers"] not in layers):
                continue
            found.append((folder, settings, row, by_trial.get(row["trial_id"], history.iloc[:0])))
    found.sort(key=lambda t: (t[2]["digits"], t[2]["layers"], t[2]["cell"] != "RNN", t[0].name, t[2]["trial_id"]))
    return found


def select(work: list, done_keys: set, shard: tuple[int, int] | None = None) -> list:
    """The adders of todo()'s list still to measure: with shard (K, N) only every N-th from the K-th, counted over
    the whole list so a job's share stays the same however much of it (or of the others') is done."""
    if shard is not None:
        index, count = shard
        work = work[index::count]
    return [w for w in work if (w[0].name, w[2]["trial_id"]) not in done_keys]


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    out_path = Path(args.out).expanduser()
    done = pd.read_parquet(out_path) if out_path.exists() else pd.DataFrame(columns=list(KEY))
    done_keys = set(zip(done["experiment"], done["trial_id"]))
    parse = lambda text, cast: {cast(x) for x in text.split(",")} if text else None  # noqa: E731
    work = todo([Path(f) for f in args.folders], parse(args.digits, int), parse(args.cells, str), parse(args.layers, int))
    work = select(work, done_keys, args.shard)
    if args.limit is not None:
        work = work[: args.limit]
    print(f"{len(done_keys)} adders already in {out_path}; {len(work)} to do", flush=True)
    version, cpu, sums_of = code_version(), cpu_model(), {}
    for i, (folder, settings, row, recorded) in enumerate(work, 1):
        experiment, started = folder.name, time.perf_counter()
        saved = None if args.retrain else saved_final_state(folder, row["trial_id"], int(row["steps_trained"]))
        trainer, evals = retrain(row, settings, saved)
        trained_s = time.perf_counter() - started
        # Saved weights are the recorded adder itself: nothing to check, its final metrics are the recorded ones.
        check = compare(evals, recorded) if saved is None else {"retrain_matched": True, "weights": "checkpoint"}
        check.setdefault("weights", "retrained")
        digits, base = int(row["digits"]), int(row["base"])
        key = (digits, base)
        if key not in sums_of:
            sums_of[key] = long_sums(digits, base, args.factor, args.chains, args.uniform, args.probe_rows)
        ladder = {f"retrained_{k}": v for k, v in trainer.probe().items()} if args.ladder else {}
        final = {f"retrained_final_{k}": getattr(evals[-1], k) if evals else row[f"final_{k}"]
                 for k in ("val_exact_match", "val_loss", "carry_chain_exact_match")}
        model = trainer.model.eval()
        if args.weights:  # the adder's final weights, so later measurements need no retraining
            save_state({"model": model.state_dict(), "config": config_of(row) | {"steps": trainer.step}},
                       Path(args.weights).expanduser() / experiment / f"{row['trial_id']}.pt")
        measured = ladder | final | profile_columns(model, sums_of[key], digits) | carry_probe_columns(model, sums_of[key], digits, base)
        new = {"experiment": experiment, **row.to_dict(), **check, "retrain_s": round(trained_s, 2),
               "measure_s": round(time.perf_counter() - started - trained_s, 2), "factor": args.factor,
               "chains": args.chains, "uniform_rows": args.uniform, "code_version": version, "cpu": cpu, **measured}
        done = pd.concat([done, pd.DataFrame([new])], ignore_index=True) if len(done) else pd.DataFrame([new])
        write_atomic(done, out_path)
        status = "from its checkpoint" if saved is not None else "matched" if check["retrain_matched"] else (
            f"MISMATCH: {check['retrain_mismatched_evals']}/{check['retrain_evals']} evals differ from step "
            f"{check['retrain_first_mismatch_step']}, max |d val_loss| {check['retrain_max_abs_diff_val_loss']:.3g}")
        print(f"[{i}/{len(work)}] {experiment} {row['trial_id']} d{digits} {row['cell']}x{row['layers']} lr {row['lr']} "
              f"seed {row['seed']}: retrain {status} ({trained_s:.0f} s + {new['measure_s']:.0f} s); chain plateau "
              f"{measured['chain_plateau_margin']:.2f}, decay {measured['chain_decay_per_decade']:.2f}/decade, "
              f"first wrong min {measured['chain_first_wrong_min']}; generalises_to recorded {row['generalises_to']}, retrained "
              f"{measured.get('retrained_generalises_to')}",
              flush=True)


def shard(text: str) -> tuple[int, int]:
    """--shard K/N as (K, N), 0 <= K < N; anything else an argparse error naming the value and what is allowed."""
    k, _, n = text.partition("/")
    try:
        index, count = int(k), int(n)
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: give K/N with whole numbers 0 <= K < N, e.g. 0/2 and 1/2")
    return index, count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="experiment folders holding trials.parquet, history.parquet, experiment.json")
    p.add_argument("--out", required=True, help="output parquet (one row per adder); resumed if it exists")
    p.add_argument("--digits", help="only these trained lengths, e.g. 10,20")
    p.add_argument("--cells", help="only these cells, e.g. RNN,GRU")
    p.add_argument("--layers", help="only these depths, e.g. 1,2")
    p.add_argument("--limit", type=int, help="at most this many adders in this run")
    p.add_argument("--shard", type=shard, metavar="K/N",
                   help="only adders K, K+N, K+2N, ... of the selection (cheapest first), K from 0: run N jobs with "
                        "K = 0..N-1, one per core, each with its own --out, and merge them with mechanism_merge.py")
    p.add_argument("--factor", type=int, default=10, help="long sums are factor x the trained length (default %(default)s)")
    p.add_argument("--chains", type=int, default=64, help="carry chains per adder (default %(default)s)")
    p.add_argument("--uniform", type=int, default=256, help="long uniform sums per adder (default %(default)s)")
    p.add_argument("--probe-rows", type=int, default=512, help="trained-length sums the carry probe is fitted on (default %(default)s)")
    p.add_argument("--no-ladder", dest="ladder", action="store_false",
                   help="skip the retrained adder's own probe ladder (100 / 1,000 / 10,000 digits, seconds per adder)")
    p.add_argument("--weights", help="also save each adder's final weights here, as WEIGHTS/EXPERIMENT/TRIAL_ID.pt "
                                     "(a few hundred KB each; torch.load(..., weights_only=True))")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s: as the study trained)")
    p.add_argument("--retrain", action="store_true",
                   help="retrain even where the experiment folder kept the trial's final checkpoint (by default those "
                        "weights are used: the adder itself, no training; column weights = checkpoint)")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
