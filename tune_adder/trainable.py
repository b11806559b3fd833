"""The Ray Tune function trainable: a flat trial config in, one `ray.tune.report` per evaluation out.

It checkpoints the full Trainer state every few evaluations and at the end, and resumes from
`ray.tune.get_checkpoint()` after a crash, so a restarted trial continues where it was saved.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import ray
import torch
from ray import tune

from tune_adder import testhooks
from tune_adder.configs import CHECKPOINT_EVERY, allowed_keys, to_configs  # noqa: F401 (re-exported)
from tune_adder.frames import STOP_REASON_KEY
from tune_adder.train import EvalMetrics, Trainer, load_state, save_state

STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"  # the last report and how the run ended, so a finished trial is never retrained


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
        testhooks.after_report(config, last.step)  # does nothing outside the tests
    final = {**(last.as_dict() if last else meta["metrics"]), STOP_REASON_KEY: trainer.stopped_reason, **_placement(device)}
    final.update(trainer.probe())  # how far past its trained length the finished model adds
    _report(final, _checkpoint(trainer, {STOP_REASON_KEY: trainer.stopped_reason, "metrics": final}))
