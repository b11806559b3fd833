"""K adders of one shape as one module: every weight has a leading member dimension and each step is one bmm.

`PackedAdder(cfg, k)` computes what K separate `AdderRNN(cfg)` compute, member by member, with batched
matmuls instead of K small ones; `member_state_dict(i)` / `load_member(i, ...)` move one member to and
from a plain AdderRNN (the same state_dict names and shapes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tune_adder.model import AdderRNN, ModelConfig, _check_int

GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}  # gate blocks stacked in weight_ih/weight_hh, in PyTorch's order


def member_names(cfg: ModelConfig) -> dict[str, str]:
    """AdderRNN state_dict name -> PackedAdder parameter name, in AdderRNN's order."""
    names = {"embed.weight": "embed"}
    for layer in range(cfg.layers):
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            names[f"rnn.{kind}_l{layer}"] = f"{kind}_l{layer}"
    return names | {"head.weight": "head_weight", "head.bias": "head_bias"}


class PackedAdder(nn.Module):
    """K AdderRNN members in one module; member i's weights are `param[i]` of every parameter.

    A new pack is K AdderRNN(cfg) drawn in turn from the global RNG (init=False leaves it zeroed, for
    callers that load every member). Dropout is refused: nn.RNN draws its masks from the global RNG in
    an order a pack cannot reproduce, and the sweeps train without it.
    """

    def __init__(self, cfg: ModelConfig, k: int, *, init: bool = True) -> None:
        super().__init__()
        _check_int("k", k, 1)
        if cfg.dropout > 0:
            raise ValueError(f"dropout={cfg.dropout!r}: a PackedAdder has no dropout; train such a model with Trainer")
        self.cfg, self.k = cfg, k
        g, h = GATES[cfg.cell] * cfg.hidden, cfg.hidden
        shapes = {"embed": (cfg.base, cfg.embed_dim)}
        for layer in range(cfg.layers):
            n_in = 2 * cfg.embed_dim if layer == 0 else h
            shapes |= {f"weight_ih_l{layer}": (g, n_in), f"weight_hh_l{layer}": (g, h)}
            shapes |= {f"bias_ih_l{layer}": (g,), f"bias_hh_l{layer}": (g,)}
        shapes |= {"head_weight": (cfg.base, h), "head_bias": (cfg.base,)}
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(k, *shape)))
        if init:
            for i in range(k):
                self.load_member(i, AdderRNN(cfg).state_dict())

    @classmethod
    def from_members(cls, members: list[AdderRNN]) -> PackedAdder:
        """A pack holding copies of these models' weights, member i = members[i] (all of one config)."""
        if not members:
            raise ValueError("members is empty: a pack needs at least one AdderRNN")
        cfg = members[0].cfg
        for i, member in enumerate(members):
            if member.cfg != cfg:
                raise ValueError(f"members[{i}].cfg={member.cfg}: every member must have members[0]'s config {cfg}")
        pack = cls(cfg, len(members), init=False).to(next(members[0].parameters()).device)
        for i, member in enumerate(members):
            pack.load_member(i, member.state_dict())
        return pack

    # ---- one member <-> AdderRNN ----------------------------------------------------------------
    def member_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's weights under AdderRNN's state_dict names (copies, on the pack's device)."""
        return {name: getattr(self, packed)[i].detach().clone() for name, packed in member_names(self.cfg).items()}

    @torch.no_grad()
    def load_member(self, i: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Overwrite member i with an AdderRNN state_dict of this config (names and shapes checked)."""
        names = member_names(self.cfg)
        if set(state_dict) != set(names):
            raise ValueError(f"state_dict keys {sorted(state_dict)}: must be AdderRNN's {sorted(names)}")
        for name, packed in names.items():
            target = getattr(self, packed)[i]
            if state_dict[name].shape != target.shape:
                raise ValueError(f"{name} shape {tuple(state_dict[name].shape)}: must be {tuple(target.shape)}")
            target.copy_(state_dict[name])

    def member_model(self, i: int) -> AdderRNN:
        """A plain AdderRNN with member i's weights, on the pack's device."""
        model = AdderRNN(self.cfg).to(self.embed.device)
        model.load_state_dict(self.member_state_dict(i))
        return model

    def select(self, members: list[int]) -> PackedAdder:
        """A new, smaller pack of copies of these members (in this order): the pack without ended members."""
        pack = PackedAdder(self.cfg, len(members), init=False).to(self.embed.device)
        index = torch.tensor(members, device=self.embed.device)
        with torch.no_grad():
            for mine, theirs in zip(self.parameters(), pack.parameters()):
                theirs.copy_(mine.index_select(0, index))
        return pack

    # ---- forward --------------------------------------------------------------------------------
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (K, B, T) digits -> (K, B, T, base) logits; member i sees only a[i], b[i] and its own weights."""
        k, batch, steps = a.shape
        # Time-major inside (T before B) so that each recurrent step reads a contiguous (K, B, ...) slice.
        digits = F.one_hot(torch.stack((a, b), dim=3).transpose(1, 2), self.cfg.base)  # (K, T, B, 2, base)
        digits = digits.to(self.embed.dtype).reshape(k, steps * batch * 2, self.cfg.base)
        x = torch.bmm(digits, self.embed).view(k, steps, batch, -1)  # (K, T, B, 2*E): a's embedding, then b's
        for layer in range(self.cfg.layers):
            x = self._layer(x, layer)  # (K, T, B, H)
        h = self.cfg.hidden
        logits = torch.baddbmm(self.head_bias.unsqueeze(1), x.view(k, -1, h), self.head_weight.transpose(1, 2))
        return logits.view(k, steps, batch, -1).transpose(1, 2)  # (K, B, T, base)

    def _layer(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """One recurrent layer over all steps: (K, T, B, n_in) -> (K, T, B, H), h0 = c0 = 0 as in nn.RNN."""
        k, steps, batch, n_in = x.shape
        w_ih, w_hh = getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(self, f"bias_ih_l{layer}"), getattr(self, f"bias_hh_l{layer}")
        gru = self.cfg.cell == "GRU"
        # The input half of every gate for all steps in one matmul, as PyTorch's CPU RNN does. RNN and LSTM add
        # both biases here (W_ih x + b_ih + W_hh h + b_hh summed in another order: float rounding only), so a
        # step is one baddbmm onto its slice; the GRU needs b_hh inside r * (W_hn h + b_hn) and keeps it apart.
        bias = b_ih if gru else b_ih + b_hh
        x_gates = torch.baddbmm(bias.unsqueeze(1), x.reshape(k, steps * batch, n_in), w_ih.transpose(1, 2))
        # unbind, not x_gates[:, t]: the backward of T selects would write T full-size zero tensors.
        x_gates = x_gates.view(k, steps, batch, -1).unbind(1)  # T of (K, B, G*H)
        w_hh_t = w_hh.transpose(1, 2)
        h = x.new_zeros(k, batch, self.cfg.hidden)  # (K, B, H)
        c = torch.zeros_like(h)  # the LSTM's cell state
        out = []
        for t in range(steps):
            if gru:  # the reset gate scales only the recurrent half of the candidate, as in nn.GRU
                h_gates = torch.baddbmm(b_hh.unsqueeze(1), h, w_hh_t)  # (K, B, 3*H)
                x_r, x_z, x_n = x_gates[t].chunk(3, dim=2)
                h_r, h_z, h_n = h_gates.chunk(3, dim=2)
                r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
                n = torch.tanh(x_n + r * h_n)
                h = n + z * (h - n)  # (1 - z) * n + z * h, written as PyTorch's CPU kernel rounds it
            else:
                gates = torch.baddbmm(x_gates[t], h, w_hh_t) if t else x_gates[0]  # (K, B, G*H); h0 = 0 adds nothing
                if self.cfg.cell == "RNN":
                    h = torch.tanh(gates)
                else:  # LSTM
                    i, f, g, o = gates.chunk(4, dim=2)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return torch.stack(out, dim=1)


def member_losses(logits: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """(K,) mean cross-entropy of each member: train._loss (logsumexp - target logit) member by member.

    Their sum is the pack's loss: member i's gradient is then exactly the gradient of its own loss.
    """
    target_logit = logits.gather(-1, total.unsqueeze(-1)).squeeze(-1)  # (K, B, T)
    return (torch.logsumexp(logits, dim=-1) - target_logit).mean(dim=(1, 2))
