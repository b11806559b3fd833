"""The seed's adder network: a shared digit embedding, a stacked RNN/LSTM/GRU, a per-step digit classifier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tune_adder.data import MAX_BASE

CELLS = ("RNN", "LSTM", "GRU")
_RECURRENT = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}


def _check_int(name: str, value, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    ok = ok and (high is None or value <= high)
    if not ok:
        allowed = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name}={value!r}: must be {allowed}")


@dataclass(frozen=True)
class ModelConfig:
    base: int = 10  # digits 0..base-1; the seed adds decimal numbers
    embed_dim: int = 32  # one embedding shared by both operands; the RNN sees 2*embed_dim
    hidden: int = 64  # recurrent state size of every layer
    layers: int = 2  # stacked recurrent layers
    cell: str = "RNN"  # RNN (tanh, the seed's), LSTM or GRU
    dropout: float = 0.0  # between recurrent layers (PyTorch's meaning); the seed uses none

    def __post_init__(self) -> None:
        _check_int("base", self.base, 2, MAX_BASE)
        _check_int("embed_dim", self.embed_dim, 1)
        _check_int("hidden", self.hidden, 1)
        _check_int("layers", self.layers, 1)
        if self.cell not in CELLS:
            raise ValueError(f"cell={self.cell!r}: must be one of {', '.join(CELLS)}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout!r}: must be a number in [0, 1)")


class AdderRNN(nn.Module):
    """Reads both operands digit by digit (least significant first) and predicts each digit of the sum.

    At the defaults this is exactly the seed's network: Embedding(10, 32) shared by both operands,
    the two embeddings concatenated to 64, RNN(64, 64, 2, batch_first=True), Linear(64, 10) per step.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.base, cfg.embed_dim)
        self.rnn = _RECURRENT[cfg.cell](
            2 * cfg.embed_dim, cfg.hidden, cfg.layers, batch_first=True, dropout=cfg.dropout
        )
        self.head = nn.Linear(cfg.hidden, cfg.base)

    def inputs(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The recurrent stack's input (B, T, 2*E): a's embedding, then b's, at every position."""
        # The embedding lookup written as one-hot @ table: the same numbers as self.embed(a), but with a
        # vocabulary of <= 16 digits the matmul's backward is about twice as fast as Embedding's on CPU.
        digits = F.one_hot(torch.stack((a, b), dim=2), self.cfg.base).to(self.embed.weight.dtype)  # (B, T, 2, base)
        return (digits @ self.embed.weight).flatten(2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.inputs(a, b))  # (B, T, H)
        return self.head(out)  # (B, T, base) logits
