"""The flat trial config (one Tune dict) split into ModelConfig and TrainConfig; no Ray, so any runner can use it."""

from __future__ import annotations

import dataclasses
from typing import Any

from tune_adder.frames import pack_members
from tune_adder.metrics import PACK_SEEDS
from tune_adder.model import ModelConfig
from tune_adder.train import TrainConfig

CHECKPOINT_EVERY = 4  # evaluations between checkpoints: cheap for these models, bounds the work a crash loses

# Flat keys that are not a ModelConfig/TrainConfig field of the same name.
RENAMED = {"max_steps": "steps"}  # the Tune column is max_steps; TrainConfig calls it steps
TRAINABLE_KEYS = ("checkpoint_every",)
NOT_FLAT = ("device",)  # Ray decides the device, not the config


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - set(NOT_FLAT)


def allowed_keys() -> list[str]:
    """Every key a trial config may hold."""
    train = {k for k in _fields(TrainConfig) if k not in RENAMED.values()} | set(RENAMED)
    return sorted(_fields(ModelConfig) | train | set(TRAINABLE_KEYS))


def to_configs(config: dict[str, Any]) -> tuple[ModelConfig, TrainConfig, int]:
    """Split a flat Tune config into ModelConfig, TrainConfig and the checkpoint interval; unknown keys raise."""
    unknown = sorted(set(config) - set(allowed_keys()))
    if unknown:
        raise ValueError(f"unknown trial config keys {unknown}; allowed: {', '.join(allowed_keys())}")
    # Search algorithms may hand numpy scalars; the dataclasses validate plain Python types.
    named = {RENAMED.get(k, k): v.item() if hasattr(v, "item") else v for k, v in config.items()}
    model_cfg = ModelConfig(**{k: v for k, v in named.items() if k in _fields(ModelConfig)})
    train_cfg = TrainConfig(**{k: v for k, v in named.items() if k in _fields(TrainConfig)})
    checkpoint_every = int(config.get("checkpoint_every", CHECKPOINT_EVERY))
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every} is invalid; it must be >= 1 evaluation")
    return model_cfg, train_cfg, checkpoint_every


def to_pack_configs(config: dict[str, Any]) -> tuple[ModelConfig, list[TrainConfig], int]:
    """A trial pack's flat config (PACK_SEEDS, optionally PACK_LRS) as one ModelConfig and one TrainConfig per member."""
    if PACK_SEEDS not in config:
        raise ValueError(f"{PACK_SEEDS} missing: a trial pack's config lists its seeds (e.g. '0,1,2')")
    split = [to_configs(member) for member in pack_members(config)]
    return split[0][0], [train for _, train, _ in split], split[0][2]
