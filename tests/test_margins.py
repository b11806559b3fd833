"""Margin profiles and carry probes (tune_adder/margins.py) on adders whose answer is known: the hand-set exact
adder of test_probes (flat margin, never wrong, the carry in one unit), and one that forgets the carry after k
consecutive carries (first wrong position k); layer-by-layer states against the stacked module's own output."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.test_probes import _hand_set_adder
from tune_adder import margins, train
from tune_adder.data import AdderBatch, add_digits, carry_chain_batch, make_batch
from tune_adder.model import AdderRNN, ModelConfig

BASE = 10


class ForgetfulAdder(nn.Module):
    """Exact logits (LOGIT for the predicted digit, 0 elsewhere), except that a carry which has run through
    `k` consecutive positions is dropped: the carry into position i is kept only while fewer than k carries
    in a row precede it. Along a carry chain the first k positions are right and position k is wrong."""

    LOGIT = 5.0

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        s = a + b
        digits = torch.empty_like(s)
        carry = torch.zeros_like(s[:, 0])
        run = torch.zeros_like(s[:, 0])  # carries in a row ending at the previous position
        for i in range(s.shape[1]):
            carry = torch.where(run >= self.k, torch.zeros_like(carry), carry)
            total = s[:, i] + carry
            digits[:, i] = total % BASE
            carry = (total >= BASE).long()
            run = torch.where(carry == 1, run + 1, torch.zeros_like(run))
        return self.LOGIT * F.one_hot(digits, BASE).float()


def _chains(rows: int, digits: int, seed: int = 0) -> AdderBatch:
    return carry_chain_batch(rows, digits, base=BASE, generator=torch.Generator().manual_seed(seed))


def _uniform(rows: int, digits: int, seed: int = 1) -> AdderBatch:
    return make_batch(rows, digits, base=BASE, split="uniform", generator=torch.Generator().manual_seed(seed))


def test_margin_is_the_true_logit_minus_the_best_other_logit():
    logits = torch.tensor([[[1.0, 4.0, 2.0], [3.0, 0.5, 3.0]]])  # (1, 2, 3)
    total = torch.tensor([[1, 2]])
    assert margins.digit_margins(logits, total).tolist() == [[2.0, 0.0]]


def test_the_hand_set_exact_adder_has_a_flat_margin_and_is_never_wrong_along_3000_digit_chains():
    model = _hand_set_adder().model
    profile = margins.margin_profile(model, _chains(16, 3000))
    assert profile.worst.shape == profile.median.shape == (3001,)
    assert torch.allclose(profile.worst, torch.full((3001,), 10.0), atol=1e-3)  # the head's logit gap, everywhere
    assert torch.equal(profile.worst, profile.median) or torch.allclose(profile.worst, profile.median, atol=1e-3)
    assert (profile.first_wrong == margins.NOT_WRONG).all()
    summary = margins.summarise(profile, trained_digits=10)
    assert summary["plateau_margin"] == pytest.approx(10.0, abs=1e-3)
    assert summary["decay_per_decade"] == pytest.approx(0.0, abs=1e-3)
    assert summary["exact_match"] == 1.0 and summary["first_wrong_median"] == 3001


@pytest.mark.parametrize("k", [1, 7, 40])
def test_an_adder_that_forgets_the_carry_after_k_positions_is_first_wrong_at_k(k):
    chains = _chains(8, 100)
    profile = margins.margin_profile(ForgetfulAdder(k), chains)
    assert profile.first_wrong.tolist() == [k] * 8
    assert (profile.worst[:k] == ForgetfulAdder.LOGIT).all() and profile.worst[k] == -ForgetfulAdder.LOGIT
    summary = margins.summarise(profile, trained_digits=10)
    assert summary["first_wrong_min"] == summary["first_wrong_median"] == k
    assert summary["exact_match"] == 0.0


def test_first_wrong_counts_from_the_least_significant_digit_and_rows_never_wrong_say_so():
    wrong = torch.tensor([[False, False, True, True], [False] * 4, [True, False, False, False]])
    assert margins.first_wrong_positions(wrong).tolist() == [2, margins.NOT_WRONG, 0]


def test_long_sums_are_scored_in_chunks_with_the_same_result(monkeypatch):
    torch.manual_seed(0)
    model = AdderRNN(ModelConfig(layers=1, hidden=16, embed_dim=4))  # untrained: every row's margins differ
    batch = _uniform(40, 50)
    whole = margins.row_margins(model, batch)
    monkeypatch.setattr(train, "EVAL_CHUNK_CELLS", 51 * 3)  # 3 rows at a time
    assert train.eval_chunk_rows(batch) == 3
    chunked = margins.row_margins(model, batch)
    assert torch.allclose(whole[0], chunked[0], atol=1e-5, rtol=0)  # matmul rounding may differ by batch size
    assert torch.equal(whole[1], chunked[1])


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("layers", [1, 3])
def test_layer_states_replay_the_stack_one_layer_at_a_time(cell, layers):
    torch.manual_seed(0)
    model = AdderRNN(ModelConfig(cell=cell, layers=layers, hidden=16, embed_dim=4)).eval()
    batch = _uniform(5, 30)
    states = margins.layer_states(model, batch.a, batch.b)
    assert len(states) == layers
    with torch.no_grad():
        out, _ = model.rnn(model.inputs(batch.a, batch.b))
        top_logits = model.head(states[-1]["h"])
        assert torch.equal(states[-1]["h"], out)  # bit for bit: the stack runs its layers one after another too
        assert torch.equal(top_logits, model(batch.a, batch.b))
    for layer in states:
        assert layer["h"].shape == (5, 31, 16)
        assert set(layer) == ({"h", "c"} if cell == "LSTM" else {"h"})
    if cell == "LSTM":  # the module's final cell state is the replayed cell state at the last position
        _, (_, c_n) = model.rnn(model.inputs(batch.a, batch.b))
        for k, layer in enumerate(states):
            assert torch.allclose(layer["c"][:, -1], c_n[k], atol=1e-5, rtol=0)


def test_carry_in_is_exact():
    batch = _uniform(64, 20)
    carries = margins.carry_in(batch, BASE)
    s = batch.a + batch.b + carries
    assert torch.equal(s % BASE, batch.total)
    assert torch.equal(carries[:, 1:], (s[:, :-1] >= BASE).long()) and (carries[:, 0] == 0).all()
    assert torch.equal(add_digits(batch.a, batch.b, BASE), batch.total)


def test_the_carry_probe_reads_the_hand_set_adders_carry_exactly_along_long_chains():
    model = _hand_set_adder().model
    train = _uniform(256, 10)
    (layer,) = margins.layer_states(model, train.a, train.b)
    probe = margins.fit_carry_probe(*margins.handed_on(layer["h"], margins.carry_in(train, BASE)))
    for batch in (_chains(8, 1000), _uniform(64, 1000)):
        (layer,) = margins.layer_states(model, batch.a, batch.b)
        found = margins.probe_margins(probe, *margins.handed_on(layer["h"], margins.carry_in(batch, BASE)))
        assert (found > 0).mean() == 1.0
        assert found.min() > 1.0  # the carry sits in one saturated unit: a wide margin, not a lucky sign


def test_the_carry_probe_fails_where_the_state_holds_no_carry():
    """The no-carry hand-set adder's state never holds the carry: its probe cannot read it along chains."""
    model = _hand_set_adder(carry=False).model
    train = _uniform(256, 10)
    (layer,) = margins.layer_states(model, train.a, train.b)
    probe = margins.fit_carry_probe(*margins.handed_on(layer["h"], margins.carry_in(train, BASE)))
    chains = _chains(8, 200)
    (layer,) = margins.layer_states(model, chains.a, chains.b)
    found = margins.probe_margins(probe, *margins.handed_on(layer["h"], margins.carry_in(chains, BASE)))
    assert (found > 0).mean() < 0.5
