"""Training K adders of one shape as one pack (PackedAdder + PackedAdam): each member follows the curve its
own Trainer would, and `run()` yields one EvalMetrics per member at every evaluation.

Members differ only in seed and learning rate; a member that ends (completed, solved or diverged) stops
changing and leaves the batch, and the pack runs until every member has ended.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from typing import Iterator

import torch

from tune_adder import generalisation, metrics, probes
from tune_adder.data import AdderBatch, training_batch
from tune_adder.model import AdderRNN, ModelConfig
from tune_adder.packed_model import PackedAdder, member_losses, member_names
from tune_adder.packed_optim import PackedAdam
from tune_adder.train import EVAL_CHUNK_CELLS, EVAL_CHUNK_ROWS, EvalMetrics, TrainConfig, _score, eval_sets, resolve_device

PACK_STATE_VERSION = 1
PER_MEMBER_FIELDS = ("seed", "lr")  # the TrainConfig fields in which members of a pack may differ


def check_packable(train_cfgs: list[TrainConfig]) -> None:
    """Raise ValueError unless the configs are equal in every field but seed and lr."""
    if not train_cfgs:
        raise ValueError("train_cfgs is empty: a pack needs at least one member")
    first = train_cfgs[0]
    for i, cfg in enumerate(train_cfgs[1:], start=1):
        for f in fields(TrainConfig):
            if f.name not in PER_MEMBER_FIELDS and getattr(cfg, f.name) != getattr(first, f.name):
                raise ValueError(
                    f"train_cfgs[{i}].{f.name}={getattr(cfg, f.name)!r} but train_cfgs[0].{f.name}="
                    f"{getattr(first, f.name)!r}: members of a pack may differ only in {' and '.join(PER_MEMBER_FIELDS)}"
                )


class PackTrainer:
    """K training runs in one pack; `run()` yields a list of K EvalMetrics (None for a member that ended
    at an earlier evaluation), `state_dict()` between yields captures all it needs to continue.

    Member i is initialised as Trainer initialises it (torch.manual_seed(seed), AdderRNN(cfg) on CPU)
    and trains on training_batch(seed_i, step, ...): its curve is its solo Trainer's to float rounding.
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfgs: list[TrainConfig],
        state: dict | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        check_packable(train_cfgs)
        self.model_cfg, self.train_cfgs = model_cfg, list(train_cfgs)
        self.cfg = train_cfgs[0]  # the fields every member shares
        self.device = resolve_device(self.cfg.device if device is None else device)
        torch.set_flush_denormal(True)  # as Trainer: denormals only slow the CPU down
        members = []
        for cfg in self.train_cfgs:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                members.append(AdderRNN(model_cfg))
        self.model = PackedAdder.from_members(members).to(self.device)
        # float64: torch.optim.Adam's lr is a Python float. The configs, not a loaded state, set the rates (as in Trainer).
        lrs = torch.tensor([c.lr for c in self.train_cfgs], dtype=torch.float64)
        self.optimizer = PackedAdam(list(self.model.parameters()), lrs)
        self.step = 0
        self.stopped_reasons: list[str | None] = [None] * len(self.train_cfgs)
        # Pack slot j trains member slots[j]; members that ended keep their final state in _ended.
        self.slots = list(range(len(self.train_cfgs)))
        self._ended: dict[int, dict] = {}
        self._loss_sum = torch.zeros(len(self.slots), device=self.device)  # (slots,) on device: no per-step sync
        self._loss_count = 0
        self._solved_streaks = [0] * len(self.train_cfgs)
        # False once a slot's loss is non-finite: kept on the device, read at evaluations only.
        self._active = torch.ones(len(self.slots), dtype=torch.bool, device=self.device)
        self._eval_sets = eval_sets(self.cfg, model_cfg.base, self.device)
        if state is not None:
            self._load(state)

    @property
    def k(self) -> int:
        return len(self.train_cfgs)

    # ---- training ---------------------------------------------------------------------------
    def run(self) -> Iterator[list[EvalMetrics | None]]:
        if not self.slots or self.step >= self.cfg.steps:
            self.stopped_reasons = [reason or "completed" for reason in self.stopped_reasons]
            return
        self.model.train()
        started, steps_since = time.perf_counter(), 0
        while self.step < self.cfg.steps:
            self._train_step()
            steps_since += 1
            if self.step % self.cfg.eval_every and self.step != self.cfg.steps:
                continue
            train_losses = (self._loss_sum / self._loss_count).tolist()  # syncs the device before timing
            steps_per_s = steps_since / max(time.perf_counter() - started, 1e-9)
            results: list[EvalMetrics | None] = [None] * self.k
            for member, result in zip(self.slots, self._evaluate(train_losses, steps_per_s)):
                results[member] = result
                self._solved_streaks[member] = self._solved_streaks[member] + 1 if result.val_exact_match == 1.0 else 0
                self.stopped_reasons[member] = self._stop_reason(member, result)
            self._loss_sum.zero_()
            self._loss_count = 0
            self._drop_ended()
            yield results
            if not self.slots:
                return
            started, steps_since = time.perf_counter(), 0

    def _train_step(self) -> None:
        cfg = self.cfg
        batches = [
            torch.stack(training_batch(self.train_cfgs[m].seed, self.step, cfg.batch_size, cfg.digits, base=self.model_cfg.base))
            for m in self.slots
        ]  # each (3, B, T): a, b, total of one member
        a, b, total = torch.stack(batches, dim=1).to(self.device, non_blocking=True)  # each (slots, B, T): one copy
        losses = member_losses(self.model(a, b), total)  # (slots,)
        # A member whose loss is non-finite has diverged: it stops here, its weights as they were before.
        self._active &= torch.isfinite(losses.detach())
        self.optimizer.zero_grad()
        losses.sum().backward()  # the sum's gradient for member i is its own loss's gradient
        self.optimizer.step(self._active)
        self._loss_sum += losses.detach()
        self._loss_count += 1
        self.step += 1

    def _stop_reason(self, member: int, result: EvalMetrics) -> str | None:
        if result.diverged:
            return "diverged"
        if self.cfg.stop_when_solved and self._solved_streaks[member] >= metrics.SOLVED_PATIENCE:
            return "solved"
        if self.step >= self.cfg.steps:
            return "completed"
        return None

    def _drop_ended(self) -> None:
        """Keep the ended members' final state aside and go on with a pack of the running ones."""
        for slot, member in enumerate(self.slots):
            if self.stopped_reasons[member] is not None:
                self._ended[member] = self._member_state(slot)
        self._keep_slots([slot for slot, member in enumerate(self.slots) if self.stopped_reasons[member] is None])

    def _keep_slots(self, keep: list[int]) -> None:
        """Shrink the pack to these slots, in this order (with none left, the old pack stays, unused)."""
        if len(keep) == len(self.slots):
            return
        self.slots = [self.slots[slot] for slot in keep]
        if not keep:
            return
        self.model = self.model.select(keep)
        self.optimizer = self.optimizer.select(keep, list(self.model.parameters()))
        index = torch.tensor(keep, device=self.device)
        self._loss_sum = self._loss_sum.index_select(0, index)
        self._active = self._active.index_select(0, index)

    @torch.inference_mode()
    def _evaluate(self, train_losses: list[float], steps_per_s: float) -> list[EvalMetrics]:
        """EvalMetrics of every slot, in slot order."""
        self.model.eval()
        val = _pack_score(self.model, self._eval_sets["val"])
        carry = _pack_score(self.model, self._eval_sets["carry_chain"])
        longer = _pack_score(self.model, self._eval_sets["longer"])
        self.model.train()
        # steps_per_s is the pack's speed: every member took this many steps per second.
        samples_seen = self.step * self.cfg.batch_size
        return [
            EvalMetrics.from_scores(self.step, samples_seen, train_loss, steps_per_s, v, c, lg)
            for train_loss, v, c, lg in zip(train_losses, val, carry, longer)
        ]

    # ---- one member -------------------------------------------------------------------------
    def member_model(self, i: int) -> AdderRNN:
        """Member i as a plain AdderRNN on the pack's device (a copy: its final weights once it has ended)."""
        if i in self._ended:
            model = AdderRNN(self.model_cfg).to(self.device)
            model.load_state_dict(self._ended[i]["model"])
            return model
        return self.model.member_model(self.slots.index(i))

    @torch.inference_mode()
    def probe(self, i: int) -> dict[str, float | int | bool]:
        """Trainer.probe for member i: length-generalisation probes of its weights as they are now."""
        model = self.member_model(i).eval()
        found = probes.run_probes(lambda batch: _score(model, batch)[1], self.model_cfg.base, self.device)
        return generalisation.summary(found, self.cfg.digits)

    # ---- state ------------------------------------------------------------------------------
    def _member_state(self, slot: int) -> dict:
        """The state of the member in `slot`, under AdderRNN's names (CPU copies)."""
        adam = self.optimizer.member_state(slot)
        names = list(member_names(self.model_cfg))
        member = self.slots[slot]
        return {
            "model": {k: v.cpu() for k, v in self.model.member_state_dict(slot).items()},
            "adam": {
                "step": adam["step"],
                "exp_avg": dict(zip(names, adam["exp_avg"])),
                "exp_avg_sq": dict(zip(names, adam["exp_avg_sq"])),
            },
            "step": self.step,
            "loss_sum": self._loss_sum[slot].item(),
            "loss_count": self._loss_count,
            "active": bool(self._active[slot].item()),
            "solved_streak": self._solved_streaks[member],
            "stopped_reason": self.stopped_reasons[member],
        }

    def state_dict(self) -> dict:
        """Everything needed to continue exactly, member by member, as CPU copies."""
        members = []
        for i in range(self.k):
            members.append(self._ended[i] if i in self._ended else self._member_state(self.slots.index(i)))
        return {
            "version": PACK_STATE_VERSION,
            "model_config": asdict(self.model_cfg),
            "train_configs": [asdict(cfg) for cfg in self.train_cfgs],
            "step": self.step,
            "members": members,
        }

    def _load(self, state: dict) -> None:
        if state.get("version") != PACK_STATE_VERSION:
            raise ValueError(f"state version={state.get('version')!r}: must be {PACK_STATE_VERSION} (a PackTrainer state)")
        if state["model_config"] != asdict(self.model_cfg):
            raise ValueError(f"state model_config={state['model_config']}: must equal {asdict(self.model_cfg)}")
        if len(state["members"]) != self.k:
            raise ValueError(f"state has {len(state['members'])} members: must have {self.k}, one per train config")
        if state["train_configs"][0]["digits"] != self.cfg.digits:
            raise ValueError(f"state digits={state['train_configs'][0]['digits']}: must equal {self.cfg.digits}")
        self.step = state["step"]
        names = list(member_names(self.model_cfg))
        running = []
        for i, member in enumerate(state["members"]):
            reason = member["stopped_reason"]
            if reason == "completed" and member["step"] < self.cfg.steps:
                reason = None  # a longer run than the saved one: carry on training
            self.stopped_reasons[i] = reason
            self._solved_streaks[i] = member["solved_streak"]
            if reason is not None:
                self._ended[i] = member
                continue
            running.append(i)
            self.model.load_member(i, member["model"])
            adam = member["adam"]
            moments = {key: [adam[key][n] for n in names] for key in ("exp_avg", "exp_avg_sq")}  # in params order
            self.optimizer.load_member(i, {"step": adam["step"], **moments})
            self._loss_sum[i] = member["loss_sum"]
            self._active[i] = member["active"]
            self._loss_count = member["loss_count"]
        self._keep_slots(running)  # slots are still members 0..K-1 here


def _pack_score(model: PackedAdder, batch: AdderBatch) -> list[tuple[float, float, float]]:
    """train._score for every member of a pack on the same batch: one (loss, exact match, digit accuracy) per member."""
    rows, length = batch.total.shape
    k = model.k
    # The same budgets as _score, counted over all members' rows.
    max_rows = max(1, EVAL_CHUNK_ROWS // k) if batch.total.device.type == "cpu" else rows
    chunk = max(1, min(max_rows, EVAL_CHUNK_CELLS // (length * k)))
    sums = torch.zeros(3, k, dtype=torch.float64, device=batch.total.device)  # loss, exact, digits right
    for start in range(0, rows, chunk):
        a, b, total = (t[start : start + chunk].expand(k, -1, -1) for t in batch)  # (K, n, T), no copy
        logits = model(a, b)
        right = logits.argmax(dim=-1) == total  # (K, n, T)
        loss_sum = member_losses(logits, total) * total[0].numel()  # (K,), as _score sums mean * cells
        sums += torch.stack((loss_sum, right.all(dim=2).sum(dim=1), right.sum(dim=(1, 2)))).double()
    loss_sum, exact, digits_right = sums.tolist()  # one device sync per set
    return [(loss / (rows * length), e / rows, d / (rows * length)) for loss, e, d in zip(loss_sum, exact, digits_right)]
