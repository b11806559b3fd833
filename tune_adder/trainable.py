"""The Ray Tune function trainable: a flat trial config in, one `ray.tune.report` per evaluation out.

It checkpoints the full Trainer state every few evaluations and at the end, and resumes from
`ray.tune.get_checkpoint()` after a crash, so a restarted trial continues where it was saved.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from typing import Any

import ray
import torch
from ray import tune

from tune_adder import testhooks
from tune_adder.configs import CHECKPOINT_EVERY, allowed_keys, to_configs, to_pack_configs  # noqa: F401 (re-exported)
from tune_adder.frames import STOP_REASON_KEY, member_key
from tune_adder.metrics import EVAL_METRICS, MEMBERS
from tune_adder.packed_train import PackTrainer
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
    """Where a report was made (read by the multi-node tests and the GPU sweep benchmark)."""
    where = {"node_id": ray.get_runtime_context().get_node_id()}
    if device == "cuda":
        where["gpu_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return where


def _checkpoint(trainer: Trainer | PackTrainer | None, meta: dict[str, Any], state: dict | None = None) -> tune.Checkpoint:
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


def _start() -> tuple[str, dict | None, dict[str, Any] | None, bool]:
    """The trial's device, and its restored state and meta if Ray restored a checkpoint; True when the trial had
    already finished before the driver died (its end is reported again and nothing is trained)."""
    device = _device_and_threads()
    if device == "cuda":  # actors are reused across trials: the peak reported must be this trial's own
        torch.cuda.reset_peak_memory_stats()
    state, meta = _restore()
    if meta is not None and meta[STOP_REASON_KEY] != "running":
        _report(meta["metrics"])
        return device, state, meta, True
    return device, state, meta, False


def train_adder(config: dict[str, Any]) -> None:
    """Train one config, reporting every evaluation; the final report carries the trainer's stop reason."""
    model_cfg, train_cfg, checkpoint_every = to_configs(config)
    device, state, meta, finished = _start()
    if finished:
        return
    trainer = Trainer(model_cfg, train_cfg, state=state, device=device)
    last: EvalMetrics | None = None
    for n, last in enumerate(trainer.run(), start=1):
        report = {**last.as_dict(), STOP_REASON_KEY: "running", **_placement(device)}
        ckpt = _checkpoint(trainer, {STOP_REASON_KEY: "running", "metrics": report}) if n % checkpoint_every == 0 else None
        _report(report, ckpt)
        testhooks.after_report(config, last.step, trainer.model)  # does nothing outside the tests
    final = {**(last.as_dict() if last else meta["metrics"]), STOP_REASON_KEY: trainer.stopped_reason, **_placement(device)}
    if testhooks.probes_wanted():  # always, outside the tests
        final.update(trainer.probe())  # how far past its trained length the finished model adds
    _report(final, _checkpoint(trainer, {STOP_REASON_KEY: trainer.stopped_reason, "metrics": final}))


# ---- trial packs ------------------------------------------------------------------------------
def pack_mean(latest: list[dict[str, Any]]) -> dict[str, Any]:
    """What a pack reports for ASHA and Optuna to decide on: each metric averaged over the members, every
    member counted at its latest evaluation (a solved member keeps its 1.0, a diverged one its last
    scores with an infinite loss), so a config is judged on all its seeds, not on the ones still running."""
    mean: dict[str, Any] = {}
    for name in EVAL_METRICS:
        values = [m[name] for m in latest]
        if name == "diverged":
            mean[name] = all(values)
        elif name in ("step", "samples_seen"):
            mean[name] = max(values)
        else:
            finite = [float(v) if math.isfinite(v) else math.inf for v in values]
            mean[name] = sum(finite) / len(finite)
    return mean


def train_pack(config: dict[str, Any]) -> None:
    """Train a trial pack: every (lr, seed) member of one config as one batched model (tune_adder.packed_train).

    Each report holds the metrics averaged over the members (what the scheduler and searcher see), one
    entry per member evaluated at this step under MEMBERS, and, in the final report, every member's
    stop reason and length-generalisation probes. Checkpoints carry the whole pack.
    """
    model_cfg, train_cfgs, checkpoint_every = to_pack_configs(config)
    ids = [{"seed": c.seed, "lr": c.lr} for c in train_cfgs]
    keys = [member_key(i) for i in ids]
    device, state, meta, finished = _start()
    if finished:
        return
    trainer = PackTrainer(model_cfg, train_cfgs, state=state, device=device)
    latest: list[dict[str, Any] | None] = meta["latest"] if meta else [None] * trainer.k

    def meta_of(report: dict[str, Any], reason: str) -> dict[str, Any]:
        return {STOP_REASON_KEY: reason, "metrics": report, "latest": latest}

    for n, results in enumerate(trainer.run(), start=1):
        members = {}
        for i, result in enumerate(results):
            if result is not None:
                latest[i] = {**result.as_dict(), **ids[i]}
                members[keys[i]] = {**latest[i], STOP_REASON_KEY: trainer.stopped_reasons[i] or "running"}
        report = {**pack_mean(latest), MEMBERS: members, STOP_REASON_KEY: "running", **_placement(device)}
        ckpt = _checkpoint(trainer, meta_of(report, "running")) if n % checkpoint_every == 0 else None
        _report(report, ckpt)
        testhooks.after_report(config, trainer.step)  # does nothing outside the tests
    probed = [trainer.probe(i) if testhooks.probes_wanted() else {} for i in range(trainer.k)]  # always probed outside the tests
    members = {keys[i]: {**latest[i], STOP_REASON_KEY: trainer.stopped_reasons[i], **probed[i]} for i in range(trainer.k)}
    final = {**pack_mean(latest), MEMBERS: members, STOP_REASON_KEY: "completed", **_placement(device)}
    _report(final, _checkpoint(trainer, meta_of(final, "completed")))


# ---- replay -----------------------------------------------------------------------------------
def replay_adder(config: dict[str, Any], recording) -> None:
    """Serve the recorded evaluations of this config and seed (a tune_adder.replay.Recording) instead of
    training: the scheduler and searcher see what training showed them, and the final report says how the
    recorded run ended, with its probes. Nothing is checkpointed: a restarted replay serves it all again."""
    reports = recording.reports(config)
    for report in reports:
        tune.report({**report, STOP_REASON_KEY: "running"})
    if reports:
        tune.report({**reports[-1], **recording.final(config)})
