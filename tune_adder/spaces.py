"""Named search spaces of the sweep, each defined once: the `full`, `seed`, `quick` and `gpu-slice` grids and the Optuna space.

A grid is an explicit list of flat trial configs (without `seed` and `max_steps`, which the sweep adds).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

CELLS = ("RNN", "LSTM", "GRU")
SEED_DIGITS = (10, 20, 50, 100)  # the seed report's operand lengths
SEED_LRS = (0.001, 0.01, 0.1)
SEED_LAYERS = (1, 2, 3, 4)  # the report compares depths without printing them; 1..4 brackets its default of 2

# The seed's default run (report section 3): every one-factor study varies one of these.
SEED_DEFAULT = {"lr": 0.001, "layers": 2, "cell": "RNN", "hidden": 64, "embed_dim": 32, "batch_size": 200, "base": 10}


@dataclass(frozen=True)
class Grid:
    """A named grid: the trial configs it runs and the step budget it is meant for."""

    name: str
    description: str
    configs: tuple[dict[str, Any], ...]
    max_steps: int = 1000  # the seed's training length


def _product(**axes: tuple) -> list[dict[str, Any]]:
    """Every combination of the given axes, on top of the seed's default run."""
    keys = list(axes)
    return [{**SEED_DEFAULT, **dict(zip(keys, values))} for values in itertools.product(*axes.values())]


def _unique(configs: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """Drop repeated configs, keeping the first occurrence's order."""
    seen: set[tuple] = set()
    out = []
    for cfg in configs:
        key = tuple(sorted(cfg.items()))
        if key not in seen:
            seen.add(key)
            out.append(cfg)
    return tuple(out)


def _seed_studies() -> list[dict[str, Any]]:
    """The report's four one-factor studies (sections 4.1-4.4), each around its default run."""
    return [
        *_product(digits=SEED_DIGITS),  # 4.1 operand length, figure 3
        *_product(digits=(10, 20, 50), lr=SEED_LRS),  # 4.2 learning rate, figure 4 (no 100-digit panel)
        *_product(digits=SEED_DIGITS, layers=SEED_LAYERS),  # 4.3 depth, figure 5
        *_product(digits=SEED_DIGITS, cell=CELLS),  # 4.4 cell type, figure 8
    ]


GRIDS: dict[str, Grid] = {
    g.name: g
    for g in (
        Grid(
            "full",
            "the seed's factors crossed: digits x lr x layers x cell (144 configs)",
            _unique(_product(digits=SEED_DIGITS, lr=SEED_LRS, layers=SEED_LAYERS, cell=CELLS)),
        ),
        Grid("seed", "the seed report's four one-factor studies around its default run (30 configs)", _unique(_seed_studies())),
        Grid(
            "quick",
            "a smoke sweep: 5 and 10 digits x RNN, GRU x lr 0.003, 0.03, 600 steps (8 configs)",
            _unique(_product(digits=(5, 10), cell=("RNN", "GRU"), lr=(0.003, 0.03))),
            max_steps=600,
        ),
        Grid(
            "gpu-slice",
            "a slice of full for throughput benchmarks: every length x cell x 2, 3 layers at lr 0.01, 200 steps (24 configs)",
            _unique(_product(layers=(2, 3), cell=CELLS, digits=(100, 50, 20, 10), lr=(0.01,))),
            max_steps=200,
        ),
    )
}
# gpu-slice (benchmarks/gpu_sweep.sh): a step's cost grows with digits x layers and depends on the cell, not on lr,
# so it keeps full's four lengths and three cells and its mean depth (2.5) at one lr (0.01; a diverged member
# would leave its pack early and make packs look cheaper; no seed-study run diverged). Lengths vary fastest, so
# any prefix of the grid (a benchmark setting cut at its time share) holds every length about equally. Every config
# is in full, so a replay of a full-grid dataset serves it.


def get_grid(name: str) -> Grid:
    """The grid called `name`; a ValueError lists the valid names."""
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; valid grids: {', '.join(GRIDS)}")
    return GRIDS[name]


def grid_configs(name: str, digits: int | None = None) -> list[dict[str, Any]]:
    """The configs of grid `name`, or only those at operand length `digits` (`--grid full --digits 20`)."""
    return [dict(c) for c in get_grid(name).configs if digits is None or c["digits"] == digits]


def grid_lengths(name: str) -> list[int]:
    return sorted({c["digits"] for c in get_grid(name).configs})


def grid_points(configs: list[dict[str, Any]], seeds: list[int], pack: str = "none") -> list[dict[str, Any]]:
    """One flat config per Ray trial of `configs` under `seeds`: a config and seed (whole seed replicas first), or a
    trial pack, a config under all seeds ("seeds") or the configs that differ only in lr ("lr,seeds")."""
    from tune_adder.frames import pack_list  # the packs' config encoding, next to its reader
    from tune_adder.metrics import PACK_LRS, PACK_SEEDS

    if pack == "none":
        return [{**cfg, "seed": seed} for seed in seeds for cfg in configs]
    seed_list = pack_list(seeds)
    if pack == "seeds":
        return [{**cfg, PACK_SEEDS: seed_list} for cfg in configs]
    groups: dict[tuple, list] = {}  # "lr,seeds": configs equal but for lr, in the grid's order
    for cfg in configs:
        rest = {k: v for k, v in cfg.items() if k != "lr"}
        groups.setdefault(tuple(sorted(rest.items())), [rest, []])[1].append(cfg["lr"])
    return [{**rest, PACK_LRS: pack_list(lrs), PACK_SEEDS: seed_list} for rest, lrs in groups.values()]


# --configs FILE: a CSV of configs, one per row; a column left out takes the seed's default run's value.
LIST_COLUMNS = {"digits": int, "lr": float, "layers": int, "cell": str, "hidden": int, "embed_dim": int, "batch_size": int, "base": int}


def load_config_list(path: str) -> list[dict[str, Any]]:
    """The configs of a --configs CSV (header: some of LIST_COLUMNS, digits required), each once, in file order.

    A ValueError names the file, the row and what is wrong; values are checked as a trial would check them."""
    import csv

    from tune_adder.configs import to_configs

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} lists no configs; give a CSV with a header ({', '.join(LIST_COLUMNS)}) and one row per config")
    columns = list(rows[0])
    unknown = [c for c in columns if c not in LIST_COLUMNS]
    if unknown or "digits" not in columns:
        what = f"unknown column {unknown[0]!r}" if unknown else "no 'digits' column"
        raise ValueError(f"{path}: {what}; the columns may be {', '.join(LIST_COLUMNS)} (digits required)")
    configs = []
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            cfg = {**SEED_DEFAULT, **{k: LIST_COLUMNS[k](v) for k, v in row.items() if v not in (None, "")}}
            cfg = {k: cfg[k] for k in ("digits", *SEED_DEFAULT)}
            to_configs(cfg)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path} line {n}: {str(e).splitlines()[0]}") from None
        configs.append(cfg)
    return list(_unique(configs))


# --search optuna: the sampled factors, at one operand length chosen by --digits.
OPTUNA_LR = (1e-4, 0.3)  # log-uniform
OPTUNA_LAYERS = (1, 4)  # inclusive
OPTUNA_HIDDEN = (32, 64, 128)
OPTUNA_EMBED = (16, 32, 64)
OPTUNA_BATCH = (64, 128, 200, 256, 512)


def optuna_space(digits: int) -> dict[str, Any]:
    """The Optuna search space as a Tune param_space: sampled factors plus the fixed operand length."""
    from ray import tune  # Ray stays at the edge: only this function needs it

    return {
        "digits": digits,
        "base": SEED_DEFAULT["base"],
        "lr": tune.loguniform(*OPTUNA_LR),
        "layers": tune.randint(OPTUNA_LAYERS[0], OPTUNA_LAYERS[1] + 1),  # randint's upper bound is exclusive
        "cell": tune.choice(list(CELLS)),
        "hidden": tune.choice(list(OPTUNA_HIDDEN)),
        "embed_dim": tune.choice(list(OPTUNA_EMBED)),
        "batch_size": tune.choice(list(OPTUNA_BATCH)),
    }
