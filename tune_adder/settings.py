"""A validated sweep command (`Settings`), its one-line error and the names the sweep's modules share.

`tune_adder.sweep` builds it from the command line; `runner` and `record` read it. Imports run one way:
sweep -> runner -> record -> settings.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from tune_adder import spaces

INTERRUPTED_EXIT = 130  # the shell's code for Ctrl-C; SIGTERM is handled as Ctrl-C
SEARCHES = ("grid", "optuna")
SCHEDULERS = ("fifo", "asha")
# --pack: what one Ray trial trains as one batched model. "seeds": a config under all its seeds;
# "lr,seeds": a grid's configs that differ only in lr, under all seeds (grid and FIFO only: ASHA and
# Optuna must judge each lr on its own).
PACKS = ("none", "seeds", "lr,seeds")
EXPERIMENT_FILE = "experiment.json"
OPTUNA_FILE = "optuna.db"
# Settings that define an experiment's trials: a rerun must match them to resume it.
RESUME_KEYS = (
    "grid", "search", "scheduler", "seeds", "num_samples", "digits", "max_steps", "stop_when_solved",
    "grace_period", "reduction_factor", "asha_metric", "eval_every", "eval_size", "checkpoint_every", "pack", "replay",
    "configs", "first_seed",
)  # fmt: skip
# --scheduler asha's defaults, chosen on the replayed full study (benchmarks/bench_search.py --scan, BENCHMARKS.md):
# rungs judged on val_loss (exact match sits at 0 early, so its rungs tie), the first at the first evaluation, 1/8 kept.
ASHA_DEFAULTS = {"asha_metric": "val_loss", "grace_period": 50, "reduction_factor": 8.0}
# What an experiment recorded before a resume key existed had: its value then (a rerun still matches it).
RESUME_DEFAULTS = {"pack": "none", "replay": None, "asha_metric": "val_exact_match", "configs": None, "first_seed": 0}


class UsageError(Exception):
    """Bad command-line input: reported as one line and exit code 2, before anything starts."""


@dataclass(frozen=True)
class Settings:
    """A validated sweep command."""

    grid: str | None  # a named grid, or None with --configs (or --search optuna)
    search: str
    scheduler: str
    seeds: int
    first_seed: int  # the seeds are first_seed .. first_seed + seeds - 1
    configs: list[dict[str, Any]] | None  # --configs FILE: the listed configs instead of a named grid
    pack: str
    replay: str | None
    num_samples: int | None
    digits: int | None
    max_steps: int
    stop_when_solved: bool
    grace_period: int
    reduction_factor: float
    asha_metric: str
    eval_every: int
    eval_size: int
    checkpoint_every: int
    cpus_per_trial: float
    gpus_per_trial: float
    max_failures: int
    address: str | None
    storage: str
    name: str
    restart: bool
    status_every: float
    quiet: bool

    def trial_configs(self) -> list[dict[str, Any]]:
        """The configs a grid search runs: the --configs list, or the named grid (at --digits if given)."""
        if self.configs is not None:
            return [dict(c) for c in self.configs]
        return spaces.grid_configs(self.grid, self.digits)

    def seed_values(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
