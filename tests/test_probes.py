"""Length-generalisation probes: an exact adder (weights set by hand) reaches the top of the ladder at
10,000 digits; one that never carries stays at its trained length; the ladder logic on its own."""

import pytest
import torch

from tune_adder import generalisation, metrics, probes
from tune_adder.model import ModelConfig
from tune_adder.train import Trainer, TrainConfig

GAIN = 50.0  # tanh(0.25 * GAIN) is 1.0 in float32: the hidden units are exact steps


def _hand_set_adder(carry: bool = True) -> Trainer:
    """A 1-layer tanh RNN that adds exactly at any length: unit k (1..20) fires iff a + b + carry >= k,
    the carry is unit 10 of the previous step, and the head reads (a + b + carry) mod 10 off the steps."""
    cfg = ModelConfig(cell="RNN", layers=1, hidden=20, embed_dim=1)
    trainer = Trainer(cfg, TrainConfig(digits=10, device="cpu"))
    m = trainer.model
    k = torch.arange(1, 21, dtype=torch.float32)
    with torch.no_grad():
        m.embed.weight.copy_(torch.arange(10, dtype=torch.float32).unsqueeze(1))  # digit d -> d
        m.rnn.weight_ih_l0.fill_(GAIN)  # GAIN * (a + b)
        m.rnn.weight_hh_l0.zero_()
        if carry:  # carry = (h_10 + 1) / 2 from the previous step; the zero initial state reads as 0.5 -> no carry
            m.rnn.weight_hh_l0[:, 9] = GAIN / 2
        m.rnn.bias_ih_l0.copy_(GAIN * (-k + 0.25) + (GAIN / 2 if carry else 0.0))
        m.rnn.bias_hh_l0.zero_()
        # u_k = (h_k + 1) / 2 is [s >= k]; [s == j] = u_j - u_(j+1), with u_0 = 1 and u_21 = 0.
        onehot_of_u = torch.zeros(21, 22)  # rows: s in 0..20 as a function of u_0..u_21
        for s in range(21):
            onehot_of_u[s, s], onehot_of_u[s, s + 1] = 1.0, -1.0
        digit_of_u = torch.zeros(10, 22)
        for s in range(20):
            digit_of_u[s % 10] += onehot_of_u[s]
        w_u, b_u = digit_of_u[:, 1:21], digit_of_u[:, 0]  # u_0 is the constant 1; u_21 never fires
        m.head.weight.copy_(10.0 * w_u / 2)  # u = (h + 1) / 2
        m.head.bias.copy_(10.0 * (b_u + w_u.sum(dim=1) / 2))
    return trainer


def test_an_exact_adder_generalises_to_the_top_of_the_ladder():
    result = _hand_set_adder().probe()
    top = metrics.PROBE_LADDER[-1]
    assert all(result[metrics.probe_column(kind, n)] == 1.0 for kind in metrics.PROBE_KINDS for n in metrics.PROBE_LADDER)
    assert result[metrics.GENERALISES_TO] == top == 10_000
    assert result[metrics.GENERALISES_BEYOND] is True
    assert set(result) == set(metrics.PROBE_COLUMNS)


def _probes(passing: dict[int, tuple[float, float]]) -> dict[str, float]:
    return {
        metrics.probe_column(kind, n): value
        for n, pair in passing.items()
        for kind, value in zip(metrics.PROBE_KINDS, pair)
    }


@pytest.mark.parametrize(
    "values, expected",
    [
        ({100: (1.0, 1.0), 1000: (1.0, 0.99), 10000: (1.0, 0.5)}, 1000),  # 0.99 passes
        ({100: (1.0, 0.98), 1000: (1.0, 1.0), 10000: (1.0, 1.0)}, 20),  # a failed rung ends the reach
        ({100: (1.0, 1.0), 1000: (1.0, 1.0), 10000: (1.0, 1.0)}, 10000),
        ({100: (float("nan"), 1.0), 1000: (1.0, 1.0), 10000: (1.0, 1.0)}, 20),
        ({100: (None, 1.0), 1000: (1.0, 1.0), 10000: (1.0, 1.0)}, 20),
    ],
)
def test_generalises_to_is_the_last_rung_of_an_unbroken_run_of_passes(values, expected):
    summary = generalisation.summary(_probes(values), trained_digits=20)
    assert summary[metrics.GENERALISES_TO] == expected
    assert summary[metrics.GENERALISES_BEYOND] is (expected > 20)


def test_the_probe_sums_are_the_same_for_every_trial_and_exact():
    from tune_adder.data import to_int

    first, again = probes.probe_sets(10), probes.probe_sets(10)
    assert first is again  # cached: drawn once per process
    batch = first[("uniform", 100)]
    assert [x + y for x, y in zip(to_int(batch.a), to_int(batch.b))] == to_int(batch.total)
    chain = first[("carry_chain", 1000)]
    assert set(x + y for x, y in zip(to_int(chain.a), to_int(chain.b))) == {10**1000}


def test_each_rung_probes_sums_of_its_own_length_and_as_many_as_the_readme_says():
    """100, 1,000 and 10,000 digits: 256, 64 and 16 sums of each kind, operands that really are that long (the
    top digit of some operand is non-zero, the carry position above it is zero), every sum exact; and each
    rung's score lands in the column named for its length."""
    import sys

    from tune_adder.data import to_int

    rows = {100: 256, 1_000: 64, 10_000: 16}  # README, "--probe"
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # to_int reads 10,000-digit rows through str
    try:
        _check_rungs(rows, to_int)
    finally:
        sys.set_int_max_str_digits(limit)
    lengths = probes.run_probes(lambda batch: float(batch.a.shape[1] - 1), 10, torch.device("cpu"))
    assert lengths == {metrics.probe_column(kind, n): float(n) for kind in metrics.PROBE_KINDS for n in rows}


def _check_rungs(rows: dict[int, int], to_int) -> None:
    assert metrics.PROBE_LADDER == tuple(rows)
    sets = probes.probe_sets(10)
    assert set(sets) == {(kind, n) for kind in metrics.PROBE_KINDS for n in rows}
    for (kind, n), batch in sets.items():
        assert batch.a.shape == batch.b.shape == batch.total.shape == (rows[n], n + 1), (kind, n)
        assert (batch.a[:, n] == 0).all() and (batch.b[:, n] == 0).all(), (kind, n)
        assert (batch.a[:, n - 1] != 0).any() or (batch.b[:, n - 1] != 0).any(), (kind, n)
        sums = [x + y for x, y in zip(to_int(batch.a), to_int(batch.b))]
        assert sums == to_int(batch.total), (kind, n)
        if kind == "carry_chain":
            assert set(sums) == {10**n}, n


def test_a_kind_stops_climbing_at_its_first_failing_rung_and_the_other_kind_goes_on():
    """Issue 18 item 17: an adder that fails a rung cannot extend its reach past it, so the ladder above it is not
    paid for: the carry chains stop at 100 digits (NaN above), the uniform sums climb on; the first rung of
    each kind is always probed."""
    asked, sets = [], probes.probe_sets(10)

    def score(batch):
        kind, length = next(key for key, probe in sets.items() if torch.equal(probe.a, batch.a) and torch.equal(probe.b, batch.b))
        asked.append((kind, length))
        return 0.5 if kind == "carry_chain" else 1.0

    found = probes.run_probes(score, 10, torch.device("cpu"))
    assert sorted(asked) == sorted([("carry_chain", 100), ("uniform", 100), ("uniform", 1_000), ("uniform", 10_000)])
    assert list(found) == list(metrics.PROBE_COLUMNS[:-2])
    assert found["probe_carry_chain_100"] == 0.5
    assert all(found[metrics.probe_column("carry_chain", n)] != found[metrics.probe_column("carry_chain", n)] for n in (1_000, 10_000))
    assert all(found[metrics.probe_column("uniform", n)] == 1.0 for n in metrics.PROBE_LADDER)


def test_an_adder_without_carries_is_probed_only_on_the_first_rung_of_carry_chains():
    trainer = _hand_set_adder(carry=False)
    result = trainer.probe()
    assert result["probe_carry_chain_100"] == 0.0
    assert all(result[metrics.probe_column("carry_chain", n)] != result[metrics.probe_column("carry_chain", n)]
               for n in (1_000, 10_000))  # NaN: not probed
    assert result[metrics.GENERALISES_TO] == trainer.train_cfg.digits
