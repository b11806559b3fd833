"""Data: every sum checked against Python's integers, at random lengths up to 1000 digits, in bases 2, 10, 16."""

import random
import re

import pytest
import torch

from tune_adder.data import SPLITS, add_digits, carry_chain_batch, make_batch, to_int

BASES = (2, 10, 16)


def _split_range(split: str, digits: int, base: int) -> tuple[int, int]:
    bound = base**digits * 5555 // 10000  # floor(0.5555 * base**digits), exactly
    return {"train": (0, bound), "test": (bound, base**digits), "uniform": (0, base**digits)}[split]


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("split", SPLITS)
def test_sums_are_exact_and_operands_in_their_split(base, split):
    rng = random.Random(f"{base}-{split}")
    generator = torch.Generator().manual_seed(base)
    for digits in [1, 2, 1000] + [rng.randint(1, 1000) for _ in range(4)]:
        batch = make_batch(16, digits, base=base, split=split, generator=generator)
        assert all(t.shape == (16, digits + 1) and t.dtype == torch.long for t in batch)
        assert int(batch.a.max()) < base and int(batch.a.min()) >= 0
        a, b, total = (to_int(t, base) for t in batch)
        low, high = _split_range(split, digits, base)
        assert all(low <= x < high for x in a + b)
        assert [x + y for x, y in zip(a, b)] == total


@pytest.mark.parametrize("digits, base", [(1, 10), (2, 10), (3, 2), (2, 16)])
def test_each_split_reaches_exactly_its_range(digits, base):
    # small enough to see every value: the bound itself must land in "test", bound - 1 in "train"
    generator = torch.Generator().manual_seed(0)
    for split in SPLITS:
        seen = set(to_int(make_batch(3000, digits, base=base, split=split, generator=generator).a, base))
        assert seen == set(range(*_split_range(split, digits, base))), split


def test_add_digits_carries_through_long_chains():
    base = 10
    a = torch.tensor([[9] * 999 + [0], [1] + [0] * 999])  # 10**999 - 1, and 1
    b = torch.tensor([[1] + [0] * 999, [9] * 999 + [0]])
    assert to_int(add_digits(a, b, base)) == [10**999, 10**999]


@pytest.mark.parametrize("base", BASES)
def test_carry_chain_batch_sums_to_base_power(base):
    generator = torch.Generator().manual_seed(2)
    for digits in (1, 5, 300):
        batch = carry_chain_batch(32, digits, base=base, generator=generator)
        a, b, total = (to_int(t, base) for t in batch)
        assert all(x + y == base**digits for x, y in zip(a, b))
        assert total == [base**digits] * 32
        assert all(x % base != 0 for x in a)  # the carry starts at the lowest digit
        assert len(set(a)) > 1 or digits == 1 and base == 2


def test_longer_probe_is_twice_the_trained_length():
    from tune_adder.train import TrainConfig, eval_sets

    sets = eval_sets(TrainConfig(digits=7, eval_size=50, probe_size=20), 10, torch.device("cpu"))
    assert sets["longer"].a.shape == (20, 15)
    assert sets["val"].a.shape == (50, 8)
    a, b, total = (to_int(t) for t in sets["longer"])
    assert [x + y for x, y in zip(a, b)] == total
    assert all(x < 10**14 * 5555 // 10000 for x in a + b)
    low, _ = _split_range("test", 7, 10)
    assert all(x >= low for x in to_int(sets["val"].a) + to_int(sets["val"].b))


def test_same_generator_seed_gives_the_same_batch():
    first = make_batch(8, 30, generator=torch.Generator().manual_seed(5))
    again = make_batch(8, 30, generator=torch.Generator().manual_seed(5))
    other = make_batch(8, 30, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not torch.equal(first.a, other.a)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"digits": 0}, "digits=0"),
        ({"digits": 1.5}, "digits=1.5"),
        ({"base": 1}, "base=1"),
        ({"base": 17}, "base=17"),
        ({"split": "valid"}, "split='valid'"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    args = {"batch_size": 4, "digits": 3} | kwargs
    batch_size, digits = args.pop("batch_size"), args.pop("digits")
    with pytest.raises(ValueError, match=re.escape(message)):
        make_batch(batch_size, digits, **args)


@pytest.mark.parametrize("split", ["train", "test"])
def test_the_gpu_sampler_without_host_sync_is_exact_too(split):
    from tune_adder.data import _operands_without_sync

    generator = torch.Generator().manual_seed(3)
    for digits, base in [(1, 10), (3, 2), (40, 16), (700, 10)]:
        x = _operands_without_sync(300, digits, base, split, generator, "cpu")
        low, high = _split_range(split, digits, base)
        assert x.shape == (300, digits) and all(low <= v < high for v in to_int(x, base))
    seen = set(to_int(_operands_without_sync(3000, 2, 10, split, generator, "cpu")))
    assert seen == set(range(*_split_range(split, 2, 10)))
