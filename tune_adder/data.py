"""Exact addition problems as digit tensors, at any length and base, made on the training device.

Numbers are rows of digits, least significant first. With base 10 and digits=3, 275 + 48 = 323 is
  a = [5, 7, 2, 0], b = [8, 4, 0, 0], total = [3, 2, 3, 0]
(one extra position holds the final carry). No Python integers are involved: operands are drawn
digit by digit and the sum is a vectorised carry, so 1000-digit sums cost microseconds per row.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

SPLITS = ("train", "test", "uniform")
# The course handout splits its 9-digit operands near 0.5555 of the range (train below, test above);
# generalised to any length and base as floor(0.5555 * base**digits), computed exactly in integers.
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


_BOUNDS: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def _split_bound(digits: int, base: int, device: torch.device) -> torch.Tensor:
    key = (digits, base, device)
    if key not in _BOUNDS:  # made once per length: a host-to-device copy every step would cost more than the check
        _BOUNDS[key] = torch.tensor(_split_bound_digits(digits, base), device=device)
    return _BOUNDS[key]


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

    "train"/"test" keep uniform draws below/above the split bound: exact rejection sampling, each kept
    row uniform over its range. About half the draws are kept.
    """
    if split == "uniform":
        return _uniform_digits(batch_size, digits, base, generator, device)
    if torch.device(device).type != "cpu":
        return _operands_without_sync(batch_size, digits, base, split, generator, device)
    kept: list[torch.Tensor] = []
    need = batch_size
    while need > 0:  # counting the kept rows reads them on the host: free on CPU
        x = _uniform_digits(2 * need + 16, digits, base, generator, device)
        keep = _in_split(x, digits, base, split)
        kept.append(x[keep][:need])
        need -= kept[-1].shape[0]
    return torch.cat(kept) if len(kept) > 1 else kept[0]


def _operands_without_sync(batch_size: int, digits: int, base: int, split: str, generator, device) -> torch.Tensor:
    """The same rejection sampling without a host sync (which would stall a GPU every step): draw enough
    that a shortfall is below 1e-12 (over 7 standard deviations) and take the first kept rows in order."""
    keep_rate = min(SPLIT_NUMERATOR, SPLIT_DENOMINATOR - SPLIT_NUMERATOR) / SPLIT_DENOMINATOR
    draw = math.ceil(1.25 * batch_size / keep_rate) + 64
    x = _uniform_digits(draw, digits, base, generator, device)
    keep = _in_split(x, digits, base, split)
    torch._assert_async(keep.sum() >= batch_size, "too few draws in the split range; draw again")
    return x[torch.nonzero_static(keep, size=batch_size).squeeze(1)]


def _in_split(x: torch.Tensor, digits: int, base: int, split: str) -> torch.Tensor:
    bound = _split_bound(digits, base, x.device)
    below = _less_than(x.flip(1), bound)
    return below if split == "train" else ~below


def add_digits(a: torch.Tensor, b: torch.Tensor, base: int) -> torch.Tensor:
    """Exact digit-wise a + b (least significant first), carries resolved in one vectorised scan.

    A carry leaves position i iff the nearest position k <= i whose digit sum is not base-1 has a sum
    >= base (sums of base-1 pass a carry on). Coding each such k as 2*k + (carries? 1 : 0), and every
    other position as -2, a running maximum finds that k, and its lowest bit is the carry.
    """
    s = a + b  # (B, T), each 0 .. 2*(base-1)
    doubled_positions = torch.arange(0, 2 * s.shape[1], 2, device=s.device)
    code = torch.where(s != base - 1, doubled_positions + (s >= base), -2)
    carry_out = code.cummax(dim=1).values & 1
    carry_in = F.pad(carry_out[:, :-1], (1, 0))
    return (s + carry_in) % base


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
    ab = F.pad(_operands(2 * batch_size, digits, base, split, generator, device), (0, 1))  # top carry position
    a, b = ab[:batch_size], ab[batch_size:]
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
    return AdderBatch(F.pad(a, (0, 1)), F.pad(b, (0, 1)), total)


# ---- the training stream ------------------------------------------------------------------------
_MASK64 = (1 << 64) - 1


def stream_seed(seed: int, step: int) -> int:
    """The generator seed of training step `step` of run `seed`: splitmix64 of the pair, so nearby
    (seed, step) pairs give unrelated streams and no two pairs below 2**32 share one."""
    x = ((seed & 0xFFFFFFFF) << 32 | (step & 0xFFFFFFFF)) & _MASK64
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) >> 1  # 63 bits: torch seeds are signed 64-bit


def training_batch(seed: int, step: int, batch_size: int, digits: int, *, base: int = 10) -> AdderBatch:
    """The sums of training step `step` of the run seeded `seed`, drawn on CPU from their own generator.

    A step's data depends on (seed, step) alone, never on the device or on the steps before it, so a
    run resumes from any step on any device with the same data, and a CPU run and a GPU run (or a
    member of a trial pack) with the same seed see the same sums.
    """
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 2**32:
        raise ValueError(f"step={step!r}: must be an integer in 0..2**32-1")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed!r}: must be an integer in 0..2**32-1")
    generator = torch.Generator().manual_seed(stream_seed(seed, step))
    return make_batch(batch_size, digits, base=base, split="train", generator=generator)


def to_int(digit_tensor: torch.Tensor, base: int = 10) -> list[int]:
    """Python integers of digit rows (least significant first); for tests and display only."""
    rows = digit_tensor.reshape(-1, digit_tensor.shape[-1]).tolist()
    return [int("".join(_DIGIT_CHARS[d] for d in reversed(row)), base) for row in rows]
