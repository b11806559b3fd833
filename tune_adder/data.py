"""Exact addition problems as digit tensors, at any length and base, made on the training device.

Numbers are rows of digits, least significant first. With base 10 and digits=3, 275 + 48 = 323 is
  a = [5, 7, 2, 0], b = [8, 4, 0, 0], total = [3, 2, 3, 0]
(one extra position holds the final carry). No Python integers are involved: operands are drawn
digit by digit and the sum is a vectorised carry, so 1000-digit sums cost microseconds per row.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch

SPLITS = ("train", "test", "uniform")
# The course handout splits operands at 555555555 of 10**9; generalised to any length and base
# as floor(SPLIT_FRACTION * base**digits), computed exactly as a fraction.
SPLIT_NUMERATOR, SPLIT_DENOMINATOR = 5555, 10000
MAX_BASE = 16
_DIGIT_CHARS = "0123456789abcdef"


class AdderBatch(NamedTuple):
    a: torch.Tensor  # (B, digits + 1) long, least significant digit first, top position 0
    b: torch.Tensor  # (B, digits + 1)
    total: torch.Tensor  # (B, digits + 1), the exact sum a + b


def _check(batch_size: int, digits: int, base: int, split: str = "uniform") -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: must be an integer >= 1")
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits={digits!r}: must be an integer >= 1")
    if isinstance(base, bool) or not isinstance(base, int) or not 2 <= base <= MAX_BASE:
        raise ValueError(f"base={base!r}: must be an integer in 2..{MAX_BASE}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: must be one of {', '.join(SPLITS)}")


@lru_cache(maxsize=256)
def _split_bound_digits(digits: int, base: int) -> tuple[int, ...]:
    """Digits of floor(0.5555 * base**digits), most significant first (a constant, computed once)."""
    bound = base**digits * SPLIT_NUMERATOR // SPLIT_DENOMINATOR
    out = []
    for _ in range(digits):
        bound, d = divmod(bound, base)
        out.append(d)
    return tuple(reversed(out))


def _less_than(x_msb: torch.Tensor, bound_msb: torch.Tensor) -> torch.Tensor:
    """Row-wise x < bound for digit rows written most significant first: decided at the first differing digit."""
    diff = x_msb - bound_msb  # (N, D)
    differs = diff != 0
    first = differs.to(torch.int8).argmax(dim=1, keepdim=True)  # first differing position (0 if none)
    return diff.gather(1, first).squeeze(1) < 0  # equal rows give diff 0 -> not less


def _uniform_digits(n: int, digits: int, base: int, generator, device) -> torch.Tensor:
    return torch.randint(0, base, (n, digits), generator=generator, device=device)


def _operands(batch_size: int, digits: int, base: int, split: str, generator, device) -> torch.Tensor:
    """(batch_size, digits) operands uniform over the split's range, least significant digit first.

    "train"/"test" keep uniform draws below/above the split bound (exact rejection sampling: each
    kept row is uniform over its range); about half the draws are kept, so a few spare are drawn.
    """
    if split == "uniform":
        return _uniform_digits(batch_size, digits, base, generator, device)
    bound = torch.tensor(_split_bound_digits(digits, base), device=device)
    kept: list[torch.Tensor] = []
    need = batch_size
    while need > 0:
        draw = 2 * need + 16
        x = _uniform_digits(draw, digits, base, generator, device)
        below = _less_than(x.flip(1), bound)
        x = x[below] if split == "train" else x[~below]
        kept.append(x[:need])
        need -= kept[-1].shape[0]
    return torch.cat(kept) if len(kept) > 1 else kept[0]


def add_digits(a: torch.Tensor, b: torch.Tensor, base: int) -> torch.Tensor:
    """Exact digit-wise a + b (least significant first), carries resolved in one vectorised scan.

    A carry enters position i from the nearest position k < i whose digit sum is not base-1
    (positions summing to base-1 pass a carry through): it carries iff that sum is >= base.
    """
    s = a + b  # (B, T), each 0 .. 2*(base-1)
    batch, length = s.shape
    positions = torch.arange(length, device=s.device).expand(batch, length)
    decides = torch.where(s != base - 1, positions, torch.full_like(positions, -1))
    last_decider = decides.cummax(dim=1).values  # nearest deciding position at or below i
    generates = s >= base
    carry_out = generates.gather(1, last_decider.clamp(min=0)) & (last_decider >= 0)
    carry_in = torch.zeros_like(s)
    carry_in[:, 1:] = carry_out[:, :-1]
    return (s + carry_in) % base


def _pad_top(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, 1))  # the extra top position for the final carry


def make_batch(
    batch_size: int,
    digits: int,
    *,
    base: int = 10,
    split: str = "train",
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> AdderBatch:
    """Random sums of two `digits`-digit operands drawn from `split`, as (B, digits+1) digit tensors."""
    _check(batch_size, digits, base, split)
    ab = _operands(2 * batch_size, digits, base, split, generator, device)
    a, b = _pad_top(ab[:batch_size]), _pad_top(ab[batch_size:])
    return AdderBatch(a, b, add_digits(a, b, base))


def carry_chain_batch(
    batch_size: int,
    digits: int,
    *,
    base: int = 10,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> AdderBatch:
    """Sums with a + b == base**digits and a's lowest digit non-zero: the carry runs the whole length.

    b is base**digits - a, written digit-wise: base - a_0 at the bottom, base-1 - a_i above it.
    """
    _check(batch_size, digits, base)
    a = _uniform_digits(batch_size, digits, base, generator, device)
    a[:, 0] = torch.randint(1, base, (batch_size,), generator=generator, device=device)
    b = (base - 1) - a
    b[:, 0] += 1
    total = torch.zeros(batch_size, digits + 1, dtype=torch.long, device=device)
    total[:, digits] = 1
    return AdderBatch(_pad_top(a), _pad_top(b), total)


def to_int(digit_tensor: torch.Tensor, base: int = 10) -> list[int]:
    """Python integers of digit rows (least significant first); for tests and display only."""
    rows = digit_tensor.reshape(-1, digit_tensor.shape[-1]).tolist()
    return [int("".join(_DIGIT_CHARS[d] for d in reversed(row)), base) for row in rows]
