"""The sweep service: `python -m tune_adder.sweep --grid quick` runs a named grid (or Optuna) on Ray Tune.

Results land in `<storage>/<name>/` (history.parquet, trials.parquet, experiment.json); rerunning the
same command resumes a crashed sweep, and a finished one only prints its summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import unicodedata
from typing import Any, Sequence

from tune_adder.metrics import ASHA_METRICS
from tune_adder.settings import ASHA_DEFAULTS, INTERRUPTED_EXIT, PACKS, SCHEDULERS, SEARCHES, Settings, UsageError
from tune_adder import spaces
from tune_adder.spaces import GRIDS, get_grid
from tune_adder.storage import Storage

# Trials one sweep may ask for. Tune keeps every trial in the driver and snapshots them every few seconds: 800,000
# (`--grid quick --seeds 100000`) wrote a 39 MB state and ran nothing for 100 s, deaf to Ctrl-C meanwhile.
MAX_TRIALS = 10_000


MAX_NAME_BYTES = 200  # --name: a folder name, with room for "-old-<time>" (--restart) within the usual 255-byte limit


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump: readable in logs and CI
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tune_adder.sweep", description=__doc__.splitlines()[0])
    grids = "; ".join(f"{g.name}: {g.description}" for g in GRIDS.values())
    p.add_argument("--grid", help=f"named grid (default full). {grids}")
    p.add_argument("--search", default="grid", help=f"one of {', '.join(SEARCHES)} (default grid)")
    p.add_argument("--num-samples", type=int, help="Optuna: configs to sample (default 20)")
    p.add_argument("--digits", type=int, help="operand length: Optuna tunes at it (default 10); a grid keeps only its configs at it (default all)")
    p.add_argument("--seeds", type=int, default=1, help="grid: run every config under K seeds, 0..K-1 (default 1)")
    p.add_argument("--first-seed", type=int, default=0, help="the first of the --seeds seeds (default 0): --first-seed 3 "
                   "--seeds 7 adds seeds 3..9 to a study that has 0..2")
    p.add_argument("--configs", metavar="CSV", help="run the configs listed in this CSV instead of a named grid (columns: "
                   f"{', '.join(spaces.LIST_COLUMNS)}; digits required, the rest default to the seed's run), e.g. the "
                   "more_seeds.csv the analysis writes")
    p.add_argument("--pack", default="none", help="train several runs as one batched model per trial: seeds (a config "
                   "under all --seeds; the scheduler sees their mean), lr,seeds (grid+FIFO: also the lrs of a config); default none")
    p.add_argument("--replay", metavar="DATASET", help="serve a finished sweep's recorded evaluations instead of training "
                   "(its folder, e.g. data/full-seeds3): compare searches and schedulers in seconds")
    p.add_argument("--scheduler", default="fifo", help=f"one of {', '.join(SCHEDULERS)} (default fifo)")
    p.add_argument("--grace-period", type=int, default=ASHA_DEFAULTS["grace_period"],
                   help=f"ASHA: steps before a trial can be cut (default {ASHA_DEFAULTS['grace_period']})")
    p.add_argument("--reduction-factor", type=float, default=ASHA_DEFAULTS["reduction_factor"],
                   help=f"ASHA: keep 1/this at each rung (default {ASHA_DEFAULTS['reduction_factor']:g})")
    p.add_argument("--asha-metric", default=ASHA_DEFAULTS["asha_metric"], help=f"ASHA: the metric its rungs compare, one of "
                   f"{', '.join(ASHA_METRICS)} (default {ASHA_DEFAULTS['asha_metric']})")
    p.add_argument("--max-steps", type=int, help="training steps per trial (default: the grid's, 1000 for full/seed)")
    p.add_argument("--stop-when-solved", action="store_true", help="end a trial once val_exact_match is 1.0 three evaluations in a row")
    p.add_argument("--eval-every", type=int, default=50, help="steps between evaluations (default 50)")
    p.add_argument("--eval-size", type=int, default=2000, help="held-out sums per evaluation (default 2000)")
    p.add_argument("--checkpoint-every", type=int, default=4, help="evaluations between checkpoints (default 4)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial; fractions pack trials on one GPU (default 0)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial from its checkpoint (default 2)")
    p.add_argument("--address", help="join this Ray cluster (default: start a local Ray on this machine)")
    p.add_argument("--storage", default="results", help="folder or URI (s3://...) for results (default results/)")
    p.add_argument("--name", help="experiment name (default derived from the settings, so a rerun finds it)")
    p.add_argument("--restart", action="store_true", help="start afresh; the old folder is kept under a new name")
    p.add_argument("--status-every", type=float, default=30.0, help="seconds between status lines (default 30)")
    p.add_argument("--quiet", action="store_true", help="no status lines, only the summary")
    return p


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def default_name(s: dict[str, Any]) -> str:
    """A name that only depends on the settings that define the trials, so rerunning a command finds it."""
    if s["search"] == "optuna":
        space = f"optuna-d{s['digits']}-n{s['num_samples']}"
    elif s.get("configs") is not None:  # a list is named by its content: the same list finds the same experiment
        digest = hashlib.sha1(json.dumps(s["configs"], sort_keys=True).encode()).hexdigest()[:8]
        space = f"configs{len(s['configs'])}-{digest}"
    else:
        space = s["grid"] + (f"-d{s['digits']}" if s.get("digits") is not None else "")
    seeds = f"seeds{s['seeds']}" + (f"from{s['first_seed']}" if s.get("first_seed") else "")
    name = f"{space}-{s['scheduler']}-{seeds}-steps{s['max_steps']}"
    name += "" if s["pack"] == "none" else "-pack" + s["pack"].replace(",", "")
    name = name if not s.get("replay") else "replay-" + name
    return name + ("-solve" if s["stop_when_solved"] else "")


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Parse and validate the command line; every problem is a UsageError naming the flag, value and what is valid."""
    argv = sys.argv[1:] if argv is None else list(argv)
    what_to_run = (f"say what to run, e.g. --grid quick (8 short trials); grids: {', '.join(GRIDS)} (--grid full is the "
                   "144-config study, hours); or --configs CSV or --search optuna; --help lists every flag")
    _require(bool(argv), what_to_run)
    a = build_parser().parse_args(argv)
    no_grid_named = a.grid is None  # a grid search must name one: refused below, once the other flags are checked
    _require(a.search in SEARCHES, f"--search {a.search!r} is not valid; choose one of: {', '.join(SEARCHES)}")
    _require(a.scheduler in SCHEDULERS, f"--scheduler {a.scheduler!r} is not valid; choose one of: {', '.join(SCHEDULERS)}")
    if a.search == "optuna":
        _require(a.grid is None, "--grid only applies to --search grid; Optuna samples its own space (see --digits)")
        _require(a.configs is None, "--configs only applies to --search grid")
        _require(a.seeds == 1 or a.pack == "seeds", f"--seeds {a.seeds} needs --pack seeds with --search optuna (each sample then trains all seeds as one trial)")
        a.num_samples = 20 if a.num_samples is None else a.num_samples
        a.digits = 10 if a.digits is None else a.digits
        _require(a.num_samples >= 1, f"--num-samples {a.num_samples} is not valid; it must be >= 1")
        _require(a.digits >= 1, f"--digits {a.digits} is not valid; it must be >= 1")
        default_steps = 1000
    elif a.configs is not None:
        _require(a.grid is None, "--grid and --configs are two ways to name the configs; give one")
        _require(a.digits is None, "--digits applies to a named grid; a --configs file lists each config's digits")
        _require(a.num_samples is None, "--num-samples only applies to --search optuna")
        try:
            a.configs = spaces.load_config_list(a.configs)
        except OSError as e:
            raise UsageError(f"--configs {a.configs!r} is not readable: {e.strerror or e}") from None
        except ValueError as e:
            raise UsageError(f"--configs {e}") from None
        default_steps = get_grid("full").max_steps
    else:
        a.grid = "full" if a.grid is None else a.grid
        _require(a.grid in GRIDS, f"--grid {a.grid!r} is not valid; choose one of: {', '.join(GRIDS)}")
        _require(a.num_samples is None, "--num-samples only applies to --search optuna")
        lengths = spaces.grid_lengths(a.grid)
        _require(a.digits is None or a.digits in lengths, f"--digits {a.digits} is not a length of grid {a.grid}; "
                 f"choose one of: {', '.join(map(str, lengths))}, or leave it out for all")
        default_steps = get_grid(a.grid).max_steps
    a.max_steps = default_steps if a.max_steps is None else a.max_steps
    _require(a.pack in PACKS, f"--pack {a.pack!r} is not valid; choose one of: {', '.join(PACKS)}")
    if a.pack == "lr,seeds":
        _require(a.search == "grid" and a.scheduler == "fifo", "--pack lr,seeds needs --search grid and --scheduler fifo "
                 "(ASHA and Optuna judge each learning rate on its own); use --pack seeds")
    for flag in ("seeds", "max_steps", "eval_every", "eval_size", "checkpoint_every", "grace_period"):
        value = getattr(a, flag)
        _require(value >= 1, f"--{flag.replace('_', '-')} {value} is not valid; it must be >= 1")
    _require(a.first_seed >= 0, f"--first-seed {a.first_seed} is not valid; it must be >= 0")
    _check_trial_count(a)
    _require(a.cpus_per_trial >= 1, f"--cpus-per-trial {a.cpus_per_trial:g} is not valid; it must be >= 1")
    _require(a.gpus_per_trial >= 0, f"--gpus-per-trial {a.gpus_per_trial:g} is not valid; it must be >= 0 (fractions pack trials)")
    _require(a.gpus_per_trial <= 1 or a.gpus_per_trial.is_integer(), f"--gpus-per-trial {a.gpus_per_trial:g} is not valid; above 1 it must be a whole number")
    _require(a.asha_metric in ASHA_METRICS, f"--asha-metric {a.asha_metric!r} is not valid; choose one of: {', '.join(ASHA_METRICS)}")
    _require(math.isfinite(a.reduction_factor) and a.reduction_factor > 1,
             f"--reduction-factor {a.reduction_factor:g} is not valid; it must be a finite number > 1")
    _require(a.max_failures >= 0, f"--max-failures {a.max_failures} is not valid; it must be >= 0")
    _require(a.status_every > 0, f"--status-every {a.status_every:g} is not valid; it must be > 0 seconds")
    _require(
        not (a.address or "").startswith("ray://"),
        f"--address {a.address!r}: Ray Client (ray://) is not supported; run the sweep on the cluster itself "
        "(ray job submit ... -- python -m tune_adder.sweep --address auto) or give the head's HOST:PORT",
    )
    _require(bool(a.storage), "--storage must not be empty; give a folder or a URI such as s3://bucket/prefix")
    try:
        Storage.from_arg(a.storage).check_writable()
    except Exception as e:  # pyarrow names the unsupported scheme (for hdfs:// in 89 lines of libjvm search: the first)
        raise UsageError(f"--storage {a.storage!r} is not usable: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    _require(
        a.scheduler != "asha" or a.grace_period <= a.max_steps,
        f"--grace-period {a.grace_period} is more than --max-steps {a.max_steps}: ASHA could never cut a trial; use at most {a.max_steps}",
    )
    if a.replay is not None:
        _check_replay(a)
    _check_memory(a)
    # A grid search names its grid (or --configs): none named is a slip (hours of the full grid), not a choice.
    _require(a.search != "grid" or a.configs is not None or not no_grid_named, what_to_run)
    values = vars(a)
    values["name"] = a.name or default_name(values)
    _check_name(values["name"])
    return Settings(**values)


def _check_name(name: str) -> None:
    """The experiment's folder name: one plain path component that every filesystem (and a pasted command) takes."""
    _require(len(name.encode()) <= MAX_NAME_BYTES, f"--name of {len(name)} characters ({len(name.encode())} bytes) is too "
             f"long; use at most {MAX_NAME_BYTES} bytes (it names a folder, and filesystems stop at 255)")
    odd = [c for c in name if unicodedata.category(c).startswith("C") or c in "/\\"]
    _require(not odd and name not in (".", ".."), f"--name {name!r} is not valid; use a plain folder name: no "
             f"control characters (newline, tab, ...) and no / or \\")


def _configs_of(a: argparse.Namespace) -> list[dict[str, Any]]:
    """A grid search's configs, before Settings exists: the --configs list or the named grid."""
    return a.configs if a.configs is not None else spaces.grid_configs(a.grid, a.digits)


def _space_flag(a: argparse.Namespace) -> str:
    return "--configs" if a.configs is not None else f"--grid {a.grid}"


def _check_replay(a: argparse.Namespace) -> None:
    """--replay: the dataset must hold every config the sweep would ask for, at its step budget and evaluation grid."""
    from tune_adder.replay import Recording, ReplayError

    _require(a.pack == "none", "--replay serves one recorded seed per trial; it does not combine with --pack")
    try:
        recording = Recording.load(a.replay)
    except ReplayError as e:
        raise UsageError(str(e)) from None
    except Exception as e:  # unreadable parquet or JSON
        raise UsageError(f"--replay {a.replay!r} is not readable as a sweep's frames: {str(e).splitlines()[0]}") from None
    a.replay = str(recording.path.resolve())
    _require(a.max_steps <= recording.max_steps, f"--max-steps {a.max_steps} is more than the dataset recorded "
             f"({recording.max_steps}); use at most {recording.max_steps}")
    recorded_every = recording.eval_every
    _require(recorded_every in (None, a.eval_every), f"--eval-every {a.eval_every} differs from the dataset's "
             f"{recorded_every}; a replay can only serve the evaluations that were recorded")
    if a.search == "grid":
        configs = _configs_of(a)
        missing = recording.missing(configs)
        _require(not missing, f"{_space_flag(a)}: {len(missing)} of its configs are not in the dataset "
                 f"(first: {missing[0] if missing else ''}); replay a grid the dataset covers")
        seeds, flags = list(range(a.first_seed, a.first_seed + a.seeds)), f"--seeds {a.seeds}"
        flags = f"--first-seed {a.first_seed} {flags}" if a.first_seed else flags
    else:  # an Optuna replay's trials run under seed 0 (a replay does not pack seeds)
        _require(a.digits in recording.values("digits"), f"--digits {a.digits} is not in the dataset; "
                 f"recorded: {', '.join(map(str, recording.values('digits')))}")
        configs = [c for c in recording.configs() if c["digits"] == a.digits]
        seeds, flags = [0], f"--search optuna --digits {a.digits}"
    recorded = recording.common_seeds(configs)
    unrecorded = [seed for seed in seeds if seed not in recorded]
    _require(not unrecorded, f"{flags} asks for seed{'s' if len(seeds) > 1 else ''} {_seed_range(seeds)} but the dataset "
             f"recorded {'seeds ' + ', '.join(map(str, recorded)) if recorded else 'no seed'} for every config asked for "
             f"(not {', '.join(map(str, unrecorded))}); a replay serves only recorded seeds, never copies of others")


def _seed_range(seeds: list[int]) -> str:
    return str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}..{seeds[-1]}"


def _check_trial_count(a: argparse.Namespace) -> None:
    """At most MAX_TRIALS Ray trials per sweep: a pack is one trial, whatever its members."""
    if a.search == "optuna":
        n, asked, detail, lower = a.num_samples, f"--num-samples {a.num_samples}", "one per sample", "lower --num-samples"
    else:
        configs = _configs_of(a)
        per_seed = len(spaces.grid_points(configs, [a.first_seed], a.pack))  # with a pack: the sweep's trials
        n = per_seed * (a.seeds if a.pack == "none" else 1)
        asked = f"{_space_flag(a)} --seeds {a.seeds}" + ("" if a.pack == "none" else f" --pack {a.pack}")
        detail = f"{len(configs)} configs x {a.seeds} seeds" if a.pack == "none" else f"{per_seed} packs"
        many_seeds = a.pack == "none" and a.seeds > 1
        lower = "lower --seeds (or split the seeds over several sweeps with --first-seed)" if many_seeds else "list fewer configs"
    _require(n <= MAX_TRIALS, f"{asked}: {n:,} trials ({detail}) is more than one sweep may run ({MAX_TRIALS:,}); {lower}")


def _pack_members(a: argparse.Namespace) -> int:
    """The runs one trial trains as one batched model: 1 without a pack."""
    members = a.seeds if a.pack != "none" else 1
    if a.pack == "lr,seeds":
        members *= len(spaces.SEED_LRS)  # at most the grid's lrs of one config
    return members


def _largest_trial(a: argparse.Namespace) -> tuple[int, str, dict[str, int]]:
    """The estimated peak bytes of the sweep's biggest trial (tune_adder.train.memory_estimate per trial config, times
    the members of a pack), what that trial is, and its parts: the same estimate `python -m tune_adder.train` checks."""
    from tune_adder.configs import to_configs
    from tune_adder.train import memory_estimate

    constants = {"max_steps": a.max_steps, "eval_every": a.eval_every, "eval_size": a.eval_size}
    if a.search == "optuna":  # the space's largest corner: every sampled size at its maximum
        configs = [{"digits": a.digits, "cell": "LSTM", "layers": spaces.OPTUNA_LAYERS[1], "hidden": max(spaces.OPTUNA_HIDDEN),
                    "embed_dim": max(spaces.OPTUNA_EMBED), "batch_size": max(spaces.OPTUNA_BATCH)}]
    else:
        configs = _configs_of(a)
    members = _pack_members(a)  # a pack trains its members as one batched model
    largest = (0, "", {})
    for config in configs:
        model_cfg, train_cfg, _ = to_configs({**config, **constants})
        parts = memory_estimate(model_cfg, train_cfg)
        parts["training step"] *= members
        parts["evaluation chunk"] *= members
        if sum(parts.values()) > largest[0]:
            shown = " ".join(f"{k}={config[k]}" for k in ("digits", "cell", "layers", "hidden", "batch_size") if k in config)
            largest = (sum(parts.values()), shown, parts)
    return largest


def _check_memory(a: argparse.Namespace) -> None:
    """A local sweep whose biggest trial cannot fit in the memory free here is refused before Ray starts (a
    cluster's nodes are not this machine: with --address the trials are not checked here)."""
    from tune_adder.train import available_memory

    if a.address is not None or a.replay is not None:  # a replay trains nothing
        return
    import torch

    free = available_memory(torch.device("cpu"))
    need, trial, parts = _largest_trial(a)
    if free is None or need <= free:
        return
    gib = lambda n: f"{n / 2**30:.3g} GiB"  # noqa: E731
    detail = ", ".join(f"{k} {gib(v)}" for k, v in parts.items())
    # Name what drives the estimate: the pack's members scale its training step and evaluation chunk, --eval-size
    # (and the length) the held-out sets; a part under a third of the whole is not worth lowering.
    members, by_members = _pack_members(a), parts["training step"] + parts["evaluation chunk"]
    lower = []
    if members > 1 and 3 * by_members >= need:
        runs = f"{'up to ' if a.pack == 'lr,seeds' else ''}{members} runs"
        lower.append(f"--seeds (the pack trains its {runs} as one model: its training step and evaluation chunk grow with them)")
    if not lower or 3 * parts["held-out sets"] >= need:
        lower.append("--eval-size" + (" or --digits" if a.search == "optuna" else "") + " (the held-out sets take about "
                     "48 bytes x eval-size x (digits + 1))")
    flags = f"--eval-size {a.eval_size}" if a.search == "grid" else f"--digits {a.digits} with --eval-size {a.eval_size}"
    flags = flags if members == 1 else f"--pack {a.pack} --seeds {a.seeds} " + flags.replace(" with ", " ")
    raise UsageError(f"{flags}: the sweep's largest trial ({trial}) needs about {gib(need)} of memory "
                     f"({detail}) but {gib(free)} is free here; lower {' or '.join(lower)}")


def command_line(argv: Sequence[str] | None) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", "-m", "tune_adder.sweep", *args])


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except UsageError as e:
        print(f"tune_adder.sweep: error: {e}", file=sys.stderr)
        return 2
    from tune_adder.runner import run  # Ray is imported only once the command is known to be good

    try:
        return run(settings, command_line(argv))
    except UsageError as e:
        print(f"tune_adder.sweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside Tune's own handler: frames are written by then
        print(f"tune_adder.sweep: interrupted; rerun the same command to continue {settings.name}", file=sys.stderr)
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
