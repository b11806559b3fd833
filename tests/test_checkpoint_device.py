"""A checkpoint written on a GPU node loads on a CPU-only machine (simulated here: no GPU on the test machine).

torch.save tags every storage with its device; a CUDA run's file says "cuda:0". We write such a file on CPU
by tagging the storages as CUDA while saving, then check the project's loader reads it back on CPU.
"""

import json

import pytest
import torch

from tune_adder import trainable
from tune_adder.model import AdderRNN, ModelConfig
from tune_adder.train import Trainer, TrainConfig, load_state

MODEL = ModelConfig(hidden=16, embed_dim=8, layers=1, cell="GRU")
TRAIN = TrainConfig(digits=3, steps=20, eval_every=10, eval_size=64, probe_size=16, batch_size=32, device="cpu")


def _save_as_if_on_cuda(obj, path) -> None:
    """torch.save with every storage's location recorded as cuda:0, as a GPU trial's leftovers would be."""
    entry = (-1000, lambda storage: "cuda:0", lambda obj, location: None)
    torch.serialization._package_registry.append(entry)
    torch.serialization._package_registry.sort(key=lambda e: e[0])
    try:
        torch.save(obj, path)
    finally:
        torch.serialization._package_registry.remove(entry)


def test_cuda_tagged_trainable_checkpoint_loads_and_resumes_on_cpu(tmp_path):
    reference = [m.as_dict() for m in Trainer(MODEL, TRAIN).run()]
    first = Trainer(MODEL, TRAIN)
    run = first.run()
    for m in run:
        if m.step == 10:
            break
    # The trainable's own checkpoint folder, with its state file rewritten as a CUDA run's would be.
    checkpoint = trainable._checkpoint(first, {"stop_reason": "running", "metrics": m.as_dict()})
    state_file = f"{checkpoint.path}/{trainable.STATE_FILE}"
    _save_as_if_on_cuda(first.state_dict(), state_file)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # the file really claims CUDA storages
            torch.load(state_file, weights_only=True)
    state = load_state(state_file)  # map_location="cpu"
    assert all(t.device.type == "cpu" for t in state["model"].values())
    assert json.load(open(f"{checkpoint.path}/{trainable.META_FILE}"))["metrics"]["step"] == 10
    # The weights drive a CPU model, and training continues exactly where it stopped.
    model = AdderRNN(MODEL)
    model.load_state_dict(state["model"])
    resumed = [m.as_dict() for m in Trainer(MODEL, TRAIN, state=state).run()]
    assert [r["step"] for r in resumed] == [20]
    for key in ("train_loss", "val_loss", "val_exact_match"):
        assert resumed[-1][key] == pytest.approx(reference[-1][key], rel=1e-5, abs=1e-6)


def test_a_gpu_runs_state_resumes_on_cpu_exactly():
    """A GPU trial's state holds no generator state of its device: the data of a step depends on (seed, step)
    only, so the state continues on CPU with the uninterrupted CPU curve (its CUDA dropout RNG is ignored)."""
    reference = [m.as_dict() for m in Trainer(MODEL, TRAIN).run()]
    first = Trainer(MODEL, TRAIN)
    next(first.run())
    state = first.state_dict()
    assert not any("rng" in key and key != "torch_rng" for key in state), sorted(state)
    state["cuda_rng"] = torch.zeros(16, dtype=torch.uint8)  # what a CUDA run adds: a Philox state
    resumed = [m.as_dict() for m in Trainer(MODEL, TRAIN, state=state).run()]
    assert [r["step"] for r in resumed] == [20]
    for key in ("train_loss", "val_loss", "val_exact_match", "val_digit_acc"):
        assert resumed[-1][key] == reference[-1][key]


def test_a_steps_data_depends_on_seed_and_step_only():
    from tune_adder.data import training_batch

    first = training_batch(3, 17, 8, 12)
    training_batch(3, 16, 8, 12)  # drawing other steps in between changes nothing
    again = training_batch(3, 17, 8, 12)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    for other in (training_batch(3, 18, 8, 12), training_batch(4, 17, 8, 12)):
        assert not torch.equal(first.a, other.a)
