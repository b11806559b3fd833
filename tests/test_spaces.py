"""The named grids and the Optuna space: sizes, contents, no duplicates, lookup by name."""

from __future__ import annotations

import pytest

from tune_adder import spaces
from tune_adder.metrics import CONFIG_COLUMNS
from tune_adder.trainable import allowed_keys


def _key(cfg: dict) -> tuple:
    return tuple(sorted(cfg.items()))


@pytest.mark.parametrize("name", list(spaces.GRIDS))
def test_grids_have_unique_configs_with_known_keys(name):
    grid = spaces.get_grid(name)
    assert len({_key(c) for c in grid.configs}) == len(grid.configs)
    for cfg in grid.configs:
        assert set(cfg) <= set(CONFIG_COLUMNS) - {"seed", "max_steps"}  # the sweep adds those two
        assert set(cfg) <= set(allowed_keys())


def test_full_grid_crosses_the_seed_factors():
    configs = spaces.get_grid("full").configs
    assert len(configs) == 4 * 3 * 4 * 3 == 144
    assert {(c["digits"], c["lr"], c["layers"], c["cell"]) for c in configs} == {
        (d, lr, n, cell) for d in (10, 20, 50, 100) for lr in (0.001, 0.01, 0.1) for n in (1, 2, 3, 4) for cell in ("RNN", "LSTM", "GRU")
    }
    assert spaces.get_grid("full").max_steps == 1000


def test_seed_grid_is_the_four_one_factor_studies():
    configs = spaces.get_grid("seed").configs
    assert len(configs) == 4 + 6 + 12 + 8  # each study minus the default runs already listed
    default = {k: v for k, v in spaces.SEED_DEFAULT.items()}
    # Every config differs from the default run (RNN, 2 layers, lr 0.001) in at most one factor besides digits.
    for cfg in configs:
        changed = {k for k in ("lr", "layers", "cell") if cfg[k] != default[k]}
        assert len(changed) <= 1, cfg
        assert {k: cfg[k] for k in ("hidden", "embed_dim", "batch_size", "base")} == {
            k: default[k] for k in ("hidden", "embed_dim", "batch_size", "base")
        }
    lr_study = {(c["digits"], c["lr"]) for c in configs if c["layers"] == 2 and c["cell"] == "RNN"}
    assert lr_study == {(d, lr) for d in (10, 20, 50) for lr in (0.001, 0.01, 0.1)} | {(100, 0.001)}
    assert {(c["digits"], c["layers"]) for c in configs if c["lr"] == 0.001 and c["cell"] == "RNN"} == {
        (d, n) for d in (10, 20, 50, 100) for n in (1, 2, 3, 4)
    }
    assert {(c["digits"], c["cell"]) for c in configs if c["lr"] == 0.001 and c["layers"] == 2} == {
        (d, cell) for d in (10, 20, 50, 100) for cell in ("RNN", "LSTM", "GRU")
    }


def test_quick_grid_is_small_and_varies_cell_and_lr():
    grid = spaces.get_grid("quick")
    assert 4 <= len(grid.configs) <= 12
    assert len({c["cell"] for c in grid.configs}) >= 2
    assert len({c["lr"] for c in grid.configs}) >= 2
    assert grid.max_steps < 1000


def test_gpu_slice_covers_every_length_and_cell_and_lies_in_full():
    grid = spaces.get_grid("gpu-slice")
    configs = grid.configs
    assert {c["digits"] for c in configs} == {10, 20, 50, 100}
    assert {c["cell"] for c in configs} == {"RNN", "LSTM", "GRU"}
    assert sum(c["layers"] for c in configs) / len(configs) == 2.5  # full's mean depth: a step costs ~ digits x layers
    full = {_key(c) for c in spaces.get_grid("full").configs}
    assert all(_key(c) in full for c in configs)  # a replay of a full-grid dataset serves it
    # Lengths vary fastest: every 4 consecutive configs (a setting cut at its time share) hold all four lengths.
    for i in range(0, len(configs), 4):
        assert {c["digits"] for c in configs[i : i + 4]} == {10, 20, 50, 100}
    assert len(configs) == 24 and grid.max_steps < 1000


def test_unknown_grid_lists_the_valid_names():
    with pytest.raises(ValueError, match="full, seed, quick"):
        spaces.get_grid("huge")


def test_optuna_space_samples_the_issue_ranges():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = spaces.optuna_space(digits=20)
    assert space["digits"] == 20
    lr = space["lr"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-4, 0.3)
    assert isinstance(space["layers"], Integer) and (space["layers"].lower, space["layers"].upper) == (1, 5)  # 1..4
    assert isinstance(space["cell"], Categorical) and set(space["cell"].categories) == {"RNN", "LSTM", "GRU"}
    assert list(space["hidden"].categories) == [32, 64, 128]
    assert list(space["embed_dim"].categories) == [16, 32, 64]
    assert list(space["batch_size"].categories) == [64, 128, 200, 256, 512]
    assert set(space) <= set(allowed_keys())


def test_a_grid_at_one_length_keeps_only_its_configs_and_names_itself_by_it(tmp_path):
    from tune_adder.record import num_trials
    from tune_adder.settings import UsageError
    from tune_adder.sweep import parse_settings

    assert spaces.grid_lengths("full") == [10, 20, 50, 100]
    twenty = spaces.grid_configs("full", 20)
    assert len(twenty) == 36 and {c["digits"] for c in twenty} == {20}
    assert twenty == [dict(c) for c in spaces.get_grid("full").configs if c["digits"] == 20]  # the grid's order
    assert len(spaces.grid_points(twenty, [0, 1, 2])) == 108
    s = parse_settings(["--grid", "full", "--digits", "20", "--seeds", "2", "--storage", str(tmp_path)])
    assert s.name == "full-d20-fifo-seeds2-steps1000" and num_trials(s) == 72
    assert parse_settings(["--grid", "full", "--storage", str(tmp_path)]).name == "full-fifo-seeds1-steps1000"
    with pytest.raises(UsageError, match=r"--digits 30 is not a length of grid full; choose one of: 10, 20, 50, 100"):
        parse_settings(["--grid", "full", "--digits", "30", "--storage", str(tmp_path)])
    with pytest.raises(UsageError, match=r"--asha-metric 'loss' is not valid; choose one of: val_exact_match, val_loss"):
        parse_settings(["--asha-metric", "loss", "--storage", str(tmp_path)])
