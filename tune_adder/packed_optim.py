"""Adam for packed weights: each member (the leading dimension of every tensor) has its own learning rate,
step count and moments, and only the members marked active move."""

from __future__ import annotations

import torch


class PackedAdam:
    """torch.optim.Adam's defaults (betas 0.9/0.999, eps 1e-8, bias correction, no weight decay) for
    tensors shaped (K, ...), member by member.

    `lr` is a (K,) tensor, best float64: a float32 0.003 is not the Python float torch.optim.Adam would use.
    `step(active)` updates the active members; an inactive member's weights, moments and step count
    stay bit for bit as they were, even when its gradient is NaN.
    """

    def __init__(
        self, params: list[torch.nn.Parameter], lr: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = list(params)
        if lr.dim() != 1 or not bool(((lr > 0) & torch.isfinite(lr)).all()):
            raise ValueError(f"lr={lr.tolist()}: must be a (K,) tensor of positive finite learning rates")
        k = lr.shape[0]
        for i, p in enumerate(self.params):
            if p.dim() == 0 or p.shape[0] != k:
                raise ValueError(f"params[{i}] shape {tuple(p.shape)}: must lead with the {k} members of lr")
        self.betas, self.eps = betas, eps
        device = self.params[0].device
        # Step counts and bias corrections in float64, like the Python floats torch.optim.Adam uses.
        self.lr = lr.to(device, torch.float64)  # (K,)
        self.steps = torch.zeros(k, dtype=torch.float64, device=device)  # (K,) Adam steps each member took
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One Adam step for the members where `active` (a (K,) bool tensor on the params' device) is True."""
        beta1, beta2 = self.betas
        self.steps += active
        step_size = (self.lr / (1 - beta1**self.steps)).float()  # (K,)
        bias_correction2_sqrt = (1 - beta2**self.steps).sqrt().float()  # (K,); 0 before a member's first step
        for p, exp_avg, exp_avg_sq in zip(self.params, self.exp_avg, self.exp_avg_sq):
            per_member = (-1,) + (1,) * (p.dim() - 1)  # broadcasts a (K,) vector over a member's tensor
            keep = active.view(per_member)
            grad = p.grad
            m = exp_avg.lerp(grad, 1 - beta1)
            v = exp_avg_sq.mul(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt.view(per_member)).add_(self.eps)
            update = (m * step_size.view(per_member)).div_(denom)  # the rounding of addcdiv in torch.optim.Adam
            # where, not a multiply by the mask: 0 * NaN would carry an inactive member's NaN in.
            torch.where(keep, m, exp_avg, out=exp_avg)
            torch.where(keep, v, exp_avg_sq, out=exp_avg_sq)
            torch.where(keep, p - update, p, out=p)

    # ---- one member's state, in the order of params -------------------------------------------------
    def member_state(self, i: int) -> dict:
        """Member i's step count and moments (CPU copies): {"step": int, "exp_avg": [...], "exp_avg_sq": [...]}."""
        return {
            "step": int(self.steps[i].item()),
            "exp_avg": [t[i].detach().cpu().clone() for t in self.exp_avg],
            "exp_avg_sq": [t[i].detach().cpu().clone() for t in self.exp_avg_sq],
        }

    @torch.no_grad()
    def load_member(self, i: int, state: dict) -> None:
        for key in ("exp_avg", "exp_avg_sq"):
            if len(state[key]) != len(self.params):
                raise ValueError(f"state {key} has {len(state[key])} tensors: must have one per param ({len(self.params)})")
            for mine, saved in zip(getattr(self, key), state[key]):
                mine[i].copy_(saved)
        self.steps[i] = state["step"]

    def select(self, members: list[int], params: list[torch.nn.Parameter]) -> PackedAdam:
        """The state of these members (in this order) for `params`, the weights of the smaller pack."""
        index = torch.tensor(members, device=self.steps.device)
        out = PackedAdam(params, self.lr.index_select(0, index), self.betas, self.eps)
        out.steps = self.steps.index_select(0, index)
        out.exp_avg = [t.index_select(0, index) for t in self.exp_avg]
        out.exp_avg_sq = [t.index_select(0, index) for t in self.exp_avg_sq]
        return out

