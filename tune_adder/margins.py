"""How sure a trained adder is of each digit, and where its layers keep the carry (issue 19; torch, no Ray).

`margin_profile` scores long sums position by position: the margin is the true digit's logit minus the best
other logit (> 0: right, < 0: wrong). `summarise` turns a profile into a few numbers per adder (plateau and
decay beyond the trained length, first wrong position). `layer_states` replays the stacked RNN/LSTM/GRU one
layer at a time to expose every layer's state; `fit_carry_probe` / `score_carry_probe` read the carry from it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tune_adder.data import AdderBatch
from tune_adder.train import eval_chunk_rows

NOT_WRONG = -1  # first_wrong of a row with every digit right


class MarginProfile(NamedTuple):
    worst: torch.Tensor  # (T,) min over rows of the margin at each position (position 0 = least significant)
    median: torch.Tensor  # (T,) median over rows
    first_wrong: torch.Tensor  # (rows,) long: the first position whose argmax digit is wrong, NOT_WRONG if none


def digit_margins(logits: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """(rows, T) margins from (rows, T, base) logits: true digit's logit minus the best other digit's logit."""
    true = logits.gather(-1, total.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, total.unsqueeze(-1), float("-inf"))
    return true - others.amax(dim=-1)


@torch.inference_mode()
def row_margins(model: nn.Module, batch: AdderBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(margins (rows, T) float32, wrong (rows, T) bool) of `model(a, b)` on a batch, in memory-bounded chunks.

    `wrong` is argmax != true digit, the exact-match rule of train._score (a tie at margin 0 may go either way).
    """
    chunk = eval_chunk_rows(batch)
    margins, wrong = [], []
    for start in range(0, batch.total.shape[0], chunk):
        a, b, total = (t[start : start + chunk] for t in batch)
        logits = model(a, b)  # (B, T, base)
        margins.append(digit_margins(logits, total).float().cpu())
        wrong.append((logits.argmax(dim=-1) != total).cpu())
    return torch.cat(margins), torch.cat(wrong)


def first_wrong_positions(wrong: torch.Tensor) -> torch.Tensor:
    """(rows,) the first position with a wrong digit (= how many digits from the bottom are right), NOT_WRONG if none."""
    any_wrong = wrong.any(dim=1)
    first = wrong.to(torch.int8).argmax(dim=1)
    return torch.where(any_wrong, first, torch.full_like(first, NOT_WRONG))


def margin_profile(model: nn.Module, batch: AdderBatch) -> MarginProfile:
    """The worst and median margin at each position over the batch's rows, and each row's first wrong position."""
    was_training = model.training
    model.eval()
    try:
        margins, wrong = row_margins(model, batch)
    finally:
        model.train(was_training)
    return MarginProfile(margins.amin(dim=0), margins.quantile(0.5, dim=0), first_wrong_positions(wrong))


def decay_slope(worst: np.ndarray, start: int) -> float:
    """Least-squares slope of the worst margin against log10(position + 1) over positions >= start (NaN if < 2)."""
    y = np.asarray(worst, dtype=np.float64)[start:]
    if y.size < 2:
        return math.nan
    x = np.log10(np.arange(start, start + y.size) + 1.0)
    return float(np.polyfit(x, y, 1)[0])


def summarise(profile: MarginProfile, trained_digits: int, prefix: str = "") -> dict[str, float]:
    """A few numbers per adder and kind of sum; positions beyond the trained length are those > trained_digits
    (a trained sum has positions 0..trained_digits).

    plateau_margin: median over those positions of the worst margin; decay_per_decade: slope of the worst margin
    against log10(position + 1) over them (0 for a flat margin, negative when it fades); min_margin: the lowest
    worst margin beyond; first_wrong_min / first_wrong_median: over rows, with a row never wrong counted as the
    sum's length (so the median is censored there; NaN min means no row was wrong); exact_match: rows never wrong.
    """
    worst = profile.worst.double().numpy()
    beyond = worst[trained_digits + 1 :]
    length = worst.size
    first = profile.first_wrong.numpy()
    censored = np.where(first == NOT_WRONG, length, first)
    wrong_rows = first[first != NOT_WRONG]
    return {
        f"{prefix}length": float(length - 1),
        f"{prefix}plateau_margin": float(np.median(beyond)) if beyond.size else math.nan,
        f"{prefix}decay_per_decade": decay_slope(worst, trained_digits + 1),
        f"{prefix}min_margin": float(beyond.min()) if beyond.size else math.nan,
        f"{prefix}trained_min_margin": float(worst[: trained_digits + 1].min()),
        f"{prefix}first_wrong_min": float(wrong_rows.min()) if wrong_rows.size else math.nan,
        f"{prefix}first_wrong_median": float(np.median(censored)),
        f"{prefix}exact_match": float((first == NOT_WRONG).mean()),
    }


# ---- every layer's state ------------------------------------------------------------------------
def _single_layer(rnn: nn.RNNBase, k: int) -> nn.RNNBase:
    """A 1-layer module of the same kind holding layer k's weights of the stacked `rnn`."""
    kwargs = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    one = type(rnn)(rnn.input_size if k == 0 else rnn.hidden_size, rnn.hidden_size, 1, bias=rnn.bias,
                    batch_first=True, **kwargs)
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if rnn.bias else [])
    with torch.no_grad():
        for name in names:
            getattr(one, f"{name}_l0").copy_(getattr(rnn, f"{name}_l{k}"))
    return one.to(getattr(rnn, "weight_ih_l0").device)


def _lstm_cells(one: nn.LSTM, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The cell state of a 1-layer LSTM at every position, from its input x and its outputs h (B, T, H).

    The gates at t depend on x_t and h_(t-1), both known, so they are computed at once; only the cell's
    linear recurrence c_t = f_t * c_(t-1) + i_t * g_t is stepped.
    """
    h_prev = F.pad(h, (0, 0, 1, 0))[:, :-1]  # zero initial state
    gates = x @ one.weight_ih_l0.T + h_prev @ one.weight_hh_l0.T
    if one.bias:
        gates = gates + one.bias_ih_l0 + one.bias_hh_l0
    i, f, g, _ = gates.chunk(4, dim=-1)  # PyTorch's gate order: input, forget, cell, output
    i, f, g = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
    c = torch.empty_like(h)
    c_t = torch.zeros_like(h[:, 0])
    for t in range(h.shape[1]):
        c_t = f[:, t] * c_t + i[:, t] * g[:, t]
        c[:, t] = c_t
    return c


@torch.inference_mode()
def layer_states(model: nn.Module, a: torch.Tensor, b: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Per layer (bottom first) {"h": (B, T, H) outputs, and for an LSTM "c": (B, T, H) cell states}.

    Runs the stacked module one layer at a time with its own weights (weight_ih_l{k}, ...); the top layer's
    "h" is what the stack itself returns (tests check it). Dropout between layers is ignored (eval mode).
    """
    rnn = model.rnn
    x = model.inputs(a, b)
    states = []
    for k in range(rnn.num_layers):
        one = _single_layer(rnn, k)
        h, _ = one(x)
        layer = {"h": h}
        if isinstance(rnn, nn.LSTM):
            layer["c"] = _lstm_cells(one, x, h)
        states.append(layer)
        x = h
    return states


# ---- a linear probe of the carry ----------------------------------------------------------------
def carry_in(batch: AdderBatch, base: int) -> torch.Tensor:
    """(rows, T) long: the carry into each position, exact from the digits (a + b + carry = total + base * carry_out)."""
    return (batch.total - batch.a - batch.b) % base


def handed_on(states: torch.Tensor, carries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (state the layer hands to position i, carry into i) for i >= 1: the state at i-1 must hold it.

    states (B, T, H), carries (B, T) -> features (B, T-1, H), targets (B, T-1).
    """
    return states[:, :-1], carries[:, 1:]


class CarryProbe(NamedTuple):
    weight: np.ndarray  # (H,)
    bias: float


def fit_carry_probe(features: torch.Tensor, targets: torch.Tensor, C: float = 1.0) -> CarryProbe:
    """Logistic regression of the carry (0/1) on states (..., H) -> (...) (sklearn, L2, lbfgs).

    A single-class target (no carries, or only carries) has no boundary to fit: refused.
    """
    from sklearn.linear_model import LogisticRegression

    x = features.reshape(-1, features.shape[-1]).double().numpy()
    y = targets.reshape(-1).numpy()
    if np.unique(y).size < 2:
        raise ValueError("the carry probe needs sums with and without carries; draw uniform sums of a few digits or more")
    fit = LogisticRegression(C=C, max_iter=2000).fit(x, y)
    return CarryProbe(fit.coef_[0].copy(), float(fit.intercept_[0]))


def probe_margins(probe: CarryProbe, features: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Signed probe margins (..., ): the logit of the true carry side (> 0 right, < 0 wrong)."""
    logit = features.double().numpy() @ probe.weight + probe.bias
    sign = 2.0 * targets.numpy() - 1.0
    return sign * logit
