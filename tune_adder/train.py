"""Seeded, resumable training of one adder: `fit(model_cfg, train_cfg)` yields EvalMetrics as it goes (no Ray here).

Run one model from the shell: `python -m tune_adder.train --digits 10 --steps 1000 --lr 0.001 [--json]`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator, NoReturn

import torch
import torch.nn.functional as F

from tune_adder import generalisation, metrics, probes
from tune_adder.data import AdderBatch, carry_chain_batch, make_batch, training_batch
from tune_adder.model import AdderRNN, ModelConfig, _check_int
from tune_adder.paths import check_can_write_under

# The held-out sets are drawn once from this seed, whatever the training seed: every trial of a
# sweep is scored on the same sums.
EVAL_SEED = 20200101
# Evaluate in chunks of at most this many rows on CPU (cache-sized: 2000 rows at once ran 1.7x slower
# than 4 x 500 here) and this many (row x position) cells anywhere, so 1000-digit evaluations stay small.
EVAL_CHUNK_ROWS = 500
EVAL_CHUNK_CELLS = 262_144
# 2: the training data of a step depends on (seed, step) only; no generator state is saved.
STATE_VERSION = 2
MAX_SEED = 2**32 - 1
SLOW_RUN_S = 3600.0  # a run estimated to train longer than this says so before it starts (train CLI)
TIMED_DIGITS = 200  # a longer run's pace is timed on sums this long and scaled to its length
INTERRUPTED_EXIT = 130  # Ctrl-C: the shell's code for SIGINT (as tune_adder.settings has it for the sweep)
# Adam turns lr into a float32 step size (lr / (1 - beta1) at the first step); far past any useful rate
# that overflows inside the optimiser, so such rates are refused up front.
MAX_LR = 1000.0


@dataclass(frozen=True)
class TrainConfig:
    digits: int = 10  # operand length; the sums have digits + 1 positions
    lr: float = 1e-3  # Adam's learning rate (the seed's default)
    batch_size: int = 200  # fresh random sums every step (the course handout's 200)
    steps: int = 1000  # optimiser steps in the whole run
    eval_every: int = 50  # evaluate (and yield EvalMetrics) every this many steps, and at the last
    eval_size: int = 2000  # held-out "test"-split sums (the handout's 2000)
    probe_size: int = 256  # sums in each probe set: carry chains, and twice the trained length
    seed: int = 0  # model init, training data and dropout
    device: str = "auto"  # "auto" = cuda if available else cpu; or "cpu", "cuda", "cuda:1", ...
    stop_when_solved: bool = False  # end once val_exact_match == 1.0 for SOLVED_PATIENCE evals in a row

    def __post_init__(self) -> None:
        _check_int("digits", self.digits, 1)
        lr_ok = isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool)
        if not (lr_ok and math.isfinite(self.lr) and 0 < self.lr <= MAX_LR):
            raise ValueError(f"lr={self.lr!r}: must be a positive finite number <= {MAX_LR:g}")
        for name in ("batch_size", "steps", "eval_every", "eval_size", "probe_size"):
            _check_int(name, getattr(self, name), 1)
        _check_int("seed", self.seed, 0, MAX_SEED)
        if not isinstance(self.stop_when_solved, bool):
            raise ValueError(f"stop_when_solved={self.stop_when_solved!r}: must be True or False")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise ValueError(f"device={self.device!r}: must be 'auto', 'cpu', 'cuda' or 'cuda:N'") from None


@dataclass(frozen=True)
class EvalMetrics:
    step: int  # optimiser steps taken
    samples_seen: int  # training sums seen
    train_loss: float  # mean training cross-entropy since the last evaluation
    val_loss: float  # cross-entropy on the held-out "test"-split set
    val_exact_match: float  # share of held-out sums with every digit right (the seed's accuracy)
    val_digit_acc: float  # share of held-out digits right
    carry_chain_exact_match: float  # a + b == base**digits: the carry runs the whole length
    longer_exact_match: float  # "train"-split sums at twice the trained length
    steps_per_s: float  # training speed since the last evaluation (evaluation excluded)
    diverged: bool  # the training loss became non-finite; the run ends here

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in metrics.EVAL_METRICS}

    @classmethod
    def from_scores(cls, step: int, samples_seen: int, train_loss: float, steps_per_s: float, val: tuple,
                    carry_chain: tuple, longer: tuple) -> EvalMetrics:
        """An evaluation from the (loss, exact match, digit accuracy) scores of the three held-out sets."""
        (val_loss, val_exact, val_digit), (_, carry_exact, _), (_, longer_exact, _) = val, carry_chain, longer
        return cls(step=step, samples_seen=samples_seen, train_loss=train_loss, val_loss=val_loss, val_exact_match=val_exact,
                   val_digit_acc=val_digit, carry_chain_exact_match=carry_exact, longer_exact_match=longer_exact,
                   steps_per_s=steps_per_s, diverged=not math.isfinite(train_loss))


assert tuple(f.name for f in fields(EvalMetrics)) == metrics.EVAL_METRICS


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Trainer:
    """One training run; `run()` yields EvalMetrics, `state_dict()` between yields captures all it needs to continue."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        state: dict | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.model_cfg, self.train_cfg = model_cfg, train_cfg
        self.device = resolve_device(train_cfg.device if device is None else device)
        # Denormal floats appear when saturated units (e.g. an LSTM at lr 0.1) push gradients towards
        # zero; on x86 CPUs they make steps several times slower and change no result we measure
        # (BENCHMARKS.md, "Training step"). The switch is process-wide and harmless elsewhere.
        torch.set_flush_denormal(True)
        # Initialise on CPU under a forked RNG: the same seed gives the same weights on every device
        # and the caller's global RNG is left alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train_cfg.seed)
            self.model = AdderRNN(model_cfg).to(self.device)
        # fused: one kernel per tensor instead of a dozen small ops (Adam's maths unchanged)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_cfg.lr, fused=True)
        self.step = 0
        self.samples_seen = 0
        self.stopped_reason: str | None = None
        self._loss_sum = torch.zeros((), device=self.device)  # on device: no per-step sync
        self._loss_count = 0
        self._solved_streak = 0
        if model_cfg.dropout > 0:
            # Dropout draws from the global RNG (the only place it is used); seed it for repeatability.
            torch.manual_seed(train_cfg.seed)
        self._eval_sets = eval_sets(train_cfg, model_cfg.base, self.device)
        if state is not None:
            self._load(state)

    # ---- training ---------------------------------------------------------------------------
    def run(self) -> Iterator[EvalMetrics]:
        cfg = self.train_cfg
        if self.stopped_reason is not None or self.step >= cfg.steps:
            self.stopped_reason = self.stopped_reason or "completed"
            return
        self.model.train()
        started, steps_since = time.perf_counter(), 0
        while self.step < cfg.steps:
            self._train_step()
            steps_since += 1
            if self.step % cfg.eval_every and self.step != cfg.steps:
                continue
            train_loss = (self._loss_sum / self._loss_count).item()  # syncs the device before timing
            steps_per_s = steps_since / max(time.perf_counter() - started, 1e-9)
            result = self._evaluate(train_loss, steps_per_s)
            self._loss_sum.zero_()
            self._loss_count = 0
            self._solved_streak = self._solved_streak + 1 if result.val_exact_match == 1.0 else 0
            self.stopped_reason = self._stop_reason(result)
            yield result
            if self.stopped_reason is not None:
                return
            started, steps_since = time.perf_counter(), 0

    def _train_step(self) -> None:
        cfg = self.train_cfg
        batch = _to_device(training_batch(cfg.seed, self.step, cfg.batch_size, cfg.digits, base=self.model_cfg.base), self.device)
        loss = _loss(self.model(batch.a, batch.b), batch.total)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._loss_sum += loss.detach()
        self._loss_count += 1
        self.step += 1
        self.samples_seen += cfg.batch_size

    def _stop_reason(self, result: EvalMetrics) -> str | None:
        if result.diverged:
            return "diverged"
        if self.train_cfg.stop_when_solved and self._solved_streak >= metrics.SOLVED_PATIENCE:
            return "solved"
        if self.step >= self.train_cfg.steps:
            return "completed"
        return None

    @torch.inference_mode()
    def _evaluate(self, train_loss: float, steps_per_s: float) -> EvalMetrics:
        self.model.eval()
        scores = [_score(self.model, self._eval_sets[name]) for name in ("val", "carry_chain", "longer")]
        self.model.train()
        return EvalMetrics.from_scores(self.step, self.samples_seen, train_loss, steps_per_s, *scores)

    @torch.inference_mode()
    def probe(self) -> dict[str, float | int | bool]:
        """Length-generalisation probes of the model as it is now (tune_adder/probes.py): exact match on
        uniform and carry-chain sums up to 10,000 digits, generalises_to and generalises_beyond_trained."""
        self.model.eval()
        try:
            found = probes.run_probes(lambda batch: _score(self.model, batch)[1], self.model_cfg.base, self.device)
        finally:
            self.model.train()
        return generalisation.summary(found, self.train_cfg.digits)

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly, as CPU copies (safe to keep while training goes on)."""
        state = {
            "version": STATE_VERSION,
            "model_config": asdict(self.model_cfg),
            "train_config": asdict(self.train_cfg),
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(copy.deepcopy(self.optimizer.state_dict())),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "samples_seen": self.samples_seen,
            "loss_sum": self._loss_sum.item(),
            "loss_count": self._loss_count,
            "solved_streak": self._solved_streak,
            "stopped_reason": self.stopped_reason,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _load(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"state version={state.get('version')!r}: must be {STATE_VERSION} (older states drew training data "
                "from a saved generator and cannot continue exactly with this code; start the run afresh)"
            )
        if state["model_config"] != asdict(self.model_cfg):
            raise ValueError(f"state model_config={state['model_config']}: must equal {asdict(self.model_cfg)}")
        if state["train_config"]["digits"] != self.train_cfg.digits:
            raise ValueError(f"state digits={state['train_config']['digits']}: must equal {self.train_cfg.digits}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.train_cfg.lr  # the config, not the checkpoint, decides the learning rate
        if self.model_cfg.dropout > 0:
            torch.set_rng_state(state["torch_rng"])
            if "cuda_rng" in state and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.step = state["step"]
        self.samples_seen = state["samples_seen"]
        self._loss_sum.fill_(state["loss_sum"])
        self._loss_count = state["loss_count"]
        self._solved_streak = state["solved_streak"]
        self.stopped_reason = state["stopped_reason"]
        if self.stopped_reason == "completed" and self.step < self.train_cfg.steps:
            self.stopped_reason = None  # a longer run than the saved one: carry on training


def fit(model_cfg: ModelConfig, train_cfg: TrainConfig, state: dict | None = None) -> Iterator[EvalMetrics]:
    """Train one model, yielding EvalMetrics every eval_every steps and at the last step."""
    return Trainer(model_cfg, train_cfg, state).run()


def save_state(state: dict, path: str | os.PathLike) -> None:
    """Write a Trainer state atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_state(path: str | os.PathLike) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- helpers ----------------------------------------------------------------------------------
def _loss(logits: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: F.cross_entropy's value, written as logsumexp - target
    logit because CPU log_softmax over a last dimension of only `base` classes is slow."""
    target_logit = logits.gather(-1, total.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return (torch.logsumexp(logits, dim=-1) - target_logit).mean()


def eval_sets(cfg: TrainConfig, base: int, device: torch.device) -> dict[str, AdderBatch]:
    """The fixed held-out sets: drawn on CPU from EVAL_SEED, so every device and trial sees the same sums."""
    rng = torch.Generator().manual_seed(EVAL_SEED)
    sets = {
        "val": make_batch(cfg.eval_size, cfg.digits, base=base, split="test", generator=rng),
        "carry_chain": carry_chain_batch(cfg.probe_size, cfg.digits, base=base, generator=rng),
        "longer": make_batch(cfg.probe_size, 2 * cfg.digits, base=base, split="train", generator=rng),
    }
    return {name: AdderBatch(*(t.to(device) for t in batch)) for name, batch in sets.items()}


def eval_chunk_rows(batch: AdderBatch) -> int:
    """Rows per forward pass when scoring `batch` without gradients: <= EVAL_CHUNK_ROWS on CPU, <= EVAL_CHUNK_CELLS cells."""
    rows, length = batch.total.shape
    max_rows = EVAL_CHUNK_ROWS if batch.total.device.type == "cpu" else rows
    return max(1, min(max_rows, EVAL_CHUNK_CELLS // length))


def _score(model: AdderRNN, batch: AdderBatch) -> tuple[float, float, float]:
    """(mean cross-entropy, whole-sum exact match, digit accuracy) over a batch, in memory-bounded chunks."""
    rows, length = batch.total.shape
    chunk = eval_chunk_rows(batch)
    sums = torch.zeros(3, dtype=torch.float64, device=batch.total.device)  # loss, exact, digits right
    for start in range(0, rows, chunk):
        a, b, total = (t[start : start + chunk] for t in batch)
        logits = model(a, b)
        right = logits.argmax(dim=-1) == total
        sums += torch.stack((_loss(logits, total) * total.numel(), right.all(dim=1).sum(), right.sum())).double()
    loss_sum, exact, digits_right = sums.tolist()  # one device sync per set
    return loss_sum / (rows * length), exact / rows, digits_right / (rows * length)


def _to_device(batch: AdderBatch, device: torch.device) -> AdderBatch:
    """One host-to-device copy for the three digit tensors of a CPU-drawn batch."""
    if device.type == "cpu":
        return batch
    return AdderBatch(*torch.stack(batch).to(device, non_blocking=True).unbind(0))


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


# ---- command line -----------------------------------------------------------------------------
def _int_or_raw(text: str):
    try:
        return int(text)
    except ValueError:
        return text  # the config rejects it with the field name and what is allowed


def _float_or_raw(text: str):
    try:
        return float(text)
    except ValueError:
        return text


class OneLineParser(argparse.ArgumentParser):
    """argparse that refuses bad input in one line (exit 2), no usage dump: readable in logs and CI."""
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m tune_adder.train", description="Train one adder and print its final metrics.")
    m, t = ModelConfig(), TrainConfig()
    p.add_argument("--digits", type=_int_or_raw, default=t.digits, help="operand length (default %(default)s)")
    p.add_argument("--base", type=_int_or_raw, default=m.base, help="number base, 2..16 (default %(default)s)")
    p.add_argument("--cell", default=m.cell, help="RNN, LSTM or GRU (default %(default)s)")
    p.add_argument("--layers", type=_int_or_raw, default=m.layers, help="recurrent layers (default %(default)s)")
    p.add_argument("--hidden", type=_int_or_raw, default=m.hidden, help="hidden size (default %(default)s)")
    p.add_argument("--embed-dim", type=_int_or_raw, default=m.embed_dim, help="digit embedding size (default %(default)s)")
    p.add_argument("--dropout", type=_float_or_raw, default=m.dropout, help="between layers (default %(default)s)")
    p.add_argument("--lr", type=_float_or_raw, default=t.lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--batch-size", type=_int_or_raw, default=t.batch_size, help="sums per step (default %(default)s)")
    p.add_argument("--steps", type=_int_or_raw, default=t.steps, help="training steps (default %(default)s)")
    p.add_argument("--eval-every", type=_int_or_raw, default=t.eval_every, help="steps between evaluations (default %(default)s)")
    p.add_argument("--eval-size", type=_int_or_raw, default=t.eval_size, help="held-out sums (default %(default)s)")
    p.add_argument("--seed", type=_int_or_raw, default=t.seed, help="seeds model init, data and dropout (default %(default)s)")
    p.add_argument("--device", default=t.device, help="auto, cpu, cuda or cuda:N, of those this machine has (default %(default)s)")
    p.add_argument("--threads", type=_int_or_raw, default=1, help="CPU threads for PyTorch (default %(default)s; see README)")
    p.add_argument("--stop-when-solved", action="store_true", help=f"stop after {metrics.SOLVED_PATIENCE} evaluations in a row at exact match 1.0")
    p.add_argument("--save-state", help="write the final trainer state here (resumable with load_state); checked before training")
    p.add_argument("--probe", action="store_true", help="at the end, probe length generalisation up to 10,000 digits (a few seconds)")
    p.add_argument("--json", action="store_true", help="print the final metrics as one JSON object on the last line")
    return p


def _configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    model_cfg = ModelConfig(
        base=args.base, embed_dim=args.embed_dim, hidden=args.hidden, layers=args.layers, cell=args.cell, dropout=args.dropout
    )
    train_cfg = TrainConfig(
        digits=args.digits,
        lr=args.lr,
        batch_size=args.batch_size,
        steps=args.steps,
        eval_every=args.eval_every,
        eval_size=args.eval_size,
        seed=args.seed,
        device=args.device,
        stop_when_solved=args.stop_when_solved,
    )
    if isinstance(args.threads, bool) or not isinstance(args.threads, int) or args.threads < 1:
        raise ValueError(f"threads={args.threads!r}: must be an integer >= 1")
    _check_device_exists(train_cfg.device)
    check_fits_in_memory(model_cfg, train_cfg)
    if args.save_state is not None:
        _check_save_path(args.save_state)
    return model_cfg, train_cfg


def _devices_here() -> list[str]:
    return ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [])


def _check_device_exists(device: str) -> None:
    """Only CPU and this machine's CUDA devices train: meta, mps, xpu and absent GPUs are refused up front."""
    if device in _devices_here():
        return
    raise ValueError(f"device={device!r}: must be a device this machine has: {', '.join(_devices_here())}")


def _check_save_path(path: str) -> None:
    """--save-state is checked before training, so a bad destination never costs the run."""
    if not path:
        raise ValueError("save_state='': must be a file path such as state.pt")
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):  # Path() would drop it and write a file there
        raise ValueError(f"save_state={path!r}: ends in a separator, so it names a folder; must be a file path such as "
                         f"{os.path.join(path, 'state.pt')}")
    if os.path.isdir(path):
        raise ValueError(f"save_state={path!r}: is a folder; must be a file path such as {os.path.join(path, 'state.pt')}")
    try:
        check_can_write_under(path)
    except ValueError as e:
        raise ValueError(f"save_state={path!r}: must be writable, but {e}") from None


def memory_estimate(model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict[str, int]:
    """Rough peak bytes of a run, by part: a training step, the held-out sets, one evaluation chunk, the probe sets.

    Per (row x position) cell a step keeps the one-hot digits, embeddings, each layer's gates and outputs
    and the logits (float32) for the backward pass, about as much again for gradients, and the int64 digit
    tensors of data generation. Deliberately simple: it is there to refuse runs off by orders of magnitude.
    """
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[model_cfg.cell]
    forward = 4 * (2 * model_cfg.base + 2 * model_cfg.embed_dim + model_cfg.layers * model_cfg.hidden * (gates + 2) + 4 * model_cfg.base)
    positions = train_cfg.digits + 1
    held_out = 3 * 8 * (train_cfg.eval_size * positions + train_cfg.probe_size * (positions + 2 * train_cfg.digits + 1))
    return {
        "training step": train_cfg.batch_size * positions * (2 * forward + 64),
        "held-out sets": 2 * held_out,  # the sets plus their temporaries while they are drawn
        # no_grad: only a layer's input and output live at once (the probes' chunks too: the same bound)
        "evaluation chunk": EVAL_CHUNK_CELLS * 4 * (6 * model_cfg.base + 2 * model_cfg.embed_dim + 2 * model_cfg.hidden),
        # the fixed length-generalisation sums (tune_adder/probes.py): both kinds, a, b and total as int64
        "probe sets": 2 * 3 * 8 * sum(rows * (length + 1) for length, rows in probes.PROBE_ROWS.items()),
    }


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run on `device` now (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_fits_in_memory(model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    """Refuse, before anything is allocated, a run whose estimate exceeds the memory free here."""
    parts = memory_estimate(model_cfg, train_cfg)
    free = available_memory(resolve_device(train_cfg.device))
    if free is None or sum(parts.values()) <= free:
        return
    gib = lambda n: f"{n / 2**30:.3g} GiB"  # noqa: E731
    detail = ", ".join(f"{k} {gib(v)}" for k, v in parts.items())
    raise ValueError(
        f"digits={train_cfg.digits}, batch_size={train_cfg.batch_size}, eval_size={train_cfg.eval_size}: the run needs about "
        f"{gib(sum(parts.values()))} of memory ({detail}) but {gib(free)} is free here; lower them"
    )


def _json_safe(row: dict) -> dict:
    # strict JSON has no NaN/inf: a diverged run reports them as null
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        model_cfg, train_cfg = _configs(args)
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    try:
        return _train(args, model_cfg, train_cfg)
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's code for it, not a traceback
        print(f"\n{parser.prog}: interrupted", file=sys.stderr)  # the progress bar holds the line: start a new one
        return INTERRUPTED_EXIT


def step_seconds(model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device) -> float:
    """Seconds per training step, estimated before training: steps of a throwaway model (the run's config, its own
    weights) on min(digits, TIMED_DIGITS)-digit sums, the fastest of two after a warm-up, scaled by the run's
    positions (the recurrence walks them one by one, so a step costs in proportion). A lower bound for runs whose
    memory is tight. Leaves the caller's RNG state, and so the run, untouched."""
    digits = min(train_cfg.digits, TIMED_DIGITS)
    batch = _to_device(training_batch(0, 0, train_cfg.batch_size, digits, base=model_cfg.base), device)
    with torch.random.fork_rng(devices=[]):
        model = AdderRNN(model_cfg).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            loss = _loss(model(batch.a, batch.b), batch.total)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()  # waits for the device
            seconds.append(time.perf_counter() - started)
    return min(seconds[1:]) * (train_cfg.digits + 1) / (digits + 1)


def slow_run_warning(model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device) -> str | None:
    """One line when a run over TIMED_DIGITS digits will train for more than SLOW_RUN_S by step_seconds; else None."""
    if train_cfg.digits <= TIMED_DIGITS:
        return None
    per_step = step_seconds(model_cfg, train_cfg, device)
    total = per_step * train_cfg.steps
    if total <= SLOW_RUN_S:
        return None
    return (f"this run will be slow: about {per_step:.3g} s per training step at {train_cfg.digits:,} digits (timed at "
            f"{TIMED_DIGITS} digits on this {device.type}, scaled by length), so {total / 3600:.3g} h or more for "
            f"{train_cfg.steps:,} steps, evaluations aside; Ctrl-C stops it")


def _train(args: argparse.Namespace, model_cfg: ModelConfig, train_cfg: TrainConfig) -> int:
    """The CLI's run once its input is checked: train, save, print the summary (and probes, and JSON)."""
    from tqdm import tqdm

    # The seed's matmuls (batch 200 x 64) are too small to gain from threads, and on a busy machine
    # extra threads spin against other work: one thread was ~15x faster than two on the shared CI box.
    torch.set_num_threads(args.threads)
    warning = slow_run_warning(model_cfg, train_cfg, resolve_device(train_cfg.device))
    if warning:
        print(f"python -m tune_adder.train: {warning}", file=sys.stderr, flush=True)
    trainer = Trainer(model_cfg, train_cfg)
    started = time.perf_counter()
    last = None
    with tqdm(total=train_cfg.steps, desc="train", unit="step", file=sys.stderr, mininterval=0.5) as bar:
        for last in trainer.run():
            bar.update(last.step - bar.n)
            bar.set_postfix(loss=f"{last.train_loss:.4f}", exact=f"{last.val_exact_match:.3f}")
    wall = time.perf_counter() - started
    if args.save_state is not None:
        save_state(trainer.state_dict(), Path(args.save_state))
    print(
        f"{trainer.stopped_reason} after {last.step} steps in {wall:.1f} s on {trainer.device}: "
        f"val_exact_match {last.val_exact_match:.4f}, val_digit_acc {last.val_digit_acc:.4f}, "
        f"carry_chain {last.carry_chain_exact_match:.4f}, longer ({2 * train_cfg.digits} digits) "
        f"{last.longer_exact_match:.4f}, train_loss {last.train_loss:.5f}"
    )
    probed = trainer.probe() if args.probe else {}
    if probed:
        shown = ", ".join(f"{k.removeprefix('probe_')} {v:.3f}" for k, v in probed.items() if k.startswith("probe_"))
        reach = (f"generalises to {probed[metrics.GENERALISES_TO]:,} digits" if probed[metrics.GENERALISES_BEYOND]
                 else f"generalises no further than its trained {train_cfg.digits} digits")
        print(f"{reach} (exact match >= 0.99 on uniform and carry-chain sums at every probed length up to it): {shown}")
    if args.json:
        row = _json_safe(last.as_dict()) | {"stop_reason": trainer.stopped_reason, "wall_time_s": round(wall, 3)} | probed
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
