"""The Ray Tune function trainable: a flat trial config in, one `ray.tune.report` per evaluation out.

It checkpoints the full Trainer state every few evaluations and at the end, and resumes from
`ray.tune.get_checkpoint()` after a crash, so a restarted trial continues where it was saved.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import ray
import torch
from ray import tune

from tune_adder.frames import STOP_REASON_KEY
from tune_adder.model import ModelConfig
from tune_adder.train import EvalMetrics, Trainer, TrainConfig, load_state, save_state

CHECKPOINT_EVERY = 4  # evaluations between checkpoints: cheap for these models, bounds the work a crash loses
STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"  # the last report and how the run ended, so a finished trial is never retrained

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


def _device_and_threads() -> str:
    """Use what Ray gave this trial: its CPUs as torch threads, and CUDA if it holds (part of) a GPU."""
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU, so it is cuda:0 here, fractions included.
    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


def _placement(device: str) -> dict[str, Any]:
    """Where a report was made (read by the multi-node tests and the GPU packing benchmark)."""
    where = {"node_id": ray.get_runtime_context().get_node_id()}
    if device == "cuda":
        where["gpu_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return where


def _checkpoint(trainer: Trainer | None, meta: dict[str, Any], state: dict | None = None) -> tune.Checkpoint:
    folder = tempfile.mkdtemp(prefix="tune_adder_ckpt_")
    save_state(state if trainer is None else trainer.state_dict(), os.path.join(folder, STATE_FILE))
    with open(os.path.join(folder, META_FILE), "w") as f:
        json.dump(meta, f)
    return tune.Checkpoint.from_directory(folder)


def _restore() -> tuple[dict | None, dict[str, Any] | None]:
    """The saved Trainer state and meta of this trial's latest checkpoint, if Ray restored one."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, None
    with checkpoint.as_directory() as folder:
        with open(os.path.join(folder, META_FILE)) as f:
            meta = json.load(f)
        return load_state(os.path.join(folder, STATE_FILE)), meta


def _report(metrics: dict[str, Any], checkpoint: tune.Checkpoint | None = None) -> None:
    tune.report(metrics, checkpoint=checkpoint)
    if checkpoint is not None:  # Ray has copied it into the experiment's storage by now
        shutil.rmtree(checkpoint.path, ignore_errors=True)


def train_adder(config: dict[str, Any]) -> None:
    """Train one config, reporting every evaluation; the final report carries the trainer's stop reason."""
    model_cfg, train_cfg, checkpoint_every = to_configs(config)
    device = _device_and_threads()
    if device == "cuda":  # actors are reused across trials: the peak reported must be this trial's own
        torch.cuda.reset_peak_memory_stats()
    state, meta = _restore()
    if meta is not None and meta[STOP_REASON_KEY] != "running":
        _report(meta["metrics"])  # finished before the driver died: report the end again, train nothing
        return
    trainer = Trainer(model_cfg, train_cfg, state=state, device=device)
    last: EvalMetrics | None = None
    for n, last in enumerate(trainer.run(), start=1):
        report = {**last.as_dict(), STOP_REASON_KEY: "running", **_placement(device)}
        ckpt = _checkpoint(trainer, {STOP_REASON_KEY: "running", "metrics": report}) if n % checkpoint_every == 0 else None
        _report(report, ckpt)
    final = {**(last.as_dict() if last else meta["metrics"]), STOP_REASON_KEY: trainer.stopped_reason, **_placement(device)}
    _report(final, _checkpoint(trainer, {STOP_REASON_KEY: trainer.stopped_reason, "metrics": final}))
