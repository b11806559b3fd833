"""Claims C1-C6 on constructed sweeps whose verdicts are known: each supported, each refuted.

Eight seeds: the fewest with which every claim can be decided (C1 and C6 test a share of seeds over 4 lengths with
Holm: 2 x 0.5**8 x 4 < 0.05; 3 seeds can decide nothing, see tests/test_analysis_stats.py)."""

import pytest

from analysis.claims import check_claims, main
from tests.analysis_frames import frames, grid, trial, write_experiment

AXES = dict(digits=(10, 20, 50, 100), lr=(0.001, 0.01, 0.1), layers=(1, 2, 3), cell=("RNN", "LSTM", "GRU"))


def as_claimed(c: dict) -> int:
    """Steps to solve in a world where every seed claim holds (all solved by 1000 where C1/C6 look)."""
    short = c["digits"] in (10, 20)
    steps = {10: 100, 20: 200, 50: 350, 100: 450}[c["digits"]]  # at most 850: solved 3 evaluations in a row by 1000
    steps += {0.001: 200, 0.01: 0, 0.1: 100}[c["lr"]]
    steps += ({1: 200, 2: 100, 3: 0} if short else {1: 100, 2: 0, 3: 100})[c["layers"]]
    order = ("RNN", "LSTM", "GRU") if c["digits"] == 10 else ("RNN", "GRU", "LSTM")
    return steps + 50 * order.index(c["cell"])


def against_claims(c: dict) -> int | None:
    """Every ordering reversed; RNN/2/lr 0.001 never solves 100 digits, RNN/2/lr 0.01 never solves 10."""
    if (c["cell"], c["layers"]) == ("RNN", 2) and (c["lr"], c["digits"]) in ((0.001, 100), (0.01, 10)):
        return None
    short = c["digits"] in (10, 20)
    steps = {10: 400, 20: 300, 50: 200, 100: 100}[c["digits"]]
    steps += {0.001: 0, 0.01: 200, 0.1: 300}[c["lr"]]
    steps += ({1: 0, 2: 100, 3: 200} if short else {1: 0, 2: 200, 3: 0})[c["layers"]]
    order = ("GRU", "LSTM", "RNN") if c["digits"] == 10 else ("LSTM", "GRU", "RNN")
    return steps + 100 * order.index(c["cell"])


SEEDS = tuple(range(8))


def one_factor(specs: list[dict]) -> list[dict]:
    """The seed's slice of a grid: configs at most one factor (lr, layers or cell) away from its default run, all the
    claims look at; the rest of the grid would only cost time."""
    default = dict(lr=0.001, layers=2, cell="RNN")
    return [s for s in specs if sum(s["config"][k] != v for k, v in default.items()) <= 1]


def verdicts(solve, seeds=SEEDS, **axes) -> dict:
    history, trials = frames(one_factor(grid(solve, seeds=seeds, eval_every=50, **{**AXES, **axes})))
    return {r.claim: r for r in check_claims(history, trials)}


pytestmark = pytest.mark.slow  # every claim on 8-seed frames: about 20 s per fixture on 2 cores


@pytest.fixture(scope="module")
def supported():
    return verdicts(as_claimed)


@pytest.fixture(scope="module")
def refuted():
    return verdicts(against_claims)


@pytest.mark.parametrize("claim", ["C1", "C2", "C3", "C4", "C5", "C6"])
def test_each_claim_supported_when_the_data_agree(supported, claim):
    assert supported[claim].verdict == "supported", supported[claim].evidence
    assert supported[claim].loss_verdict in ("supported", "n/a"), supported[claim].evidence


@pytest.mark.parametrize("claim", ["C3", "C4", "C5"])
def test_each_claim_refuted_when_the_data_disagree(refuted, claim):
    assert refuted[claim].verdict == "refuted", refuted[claim].evidence
    assert refuted[claim].loss_verdict == "refuted", refuted[claim].evidence


@pytest.mark.parametrize("claim", ["C1", "C2", "C6"])
def test_a_claim_whose_checks_split_is_mixed_not_refuted(refuted, claim):
    """against_claims: the default run never solves 100 digits (so C1 fails there alone, and C2's 50 vs 100 digits
    goes the claim's way while the other lengths go against it); lr 0.01 never solves 10 digits (C6 fails there)."""
    assert refuted[claim].verdict == "mixed", refuted[claim].evidence
    if claim != "C2":
        assert refuted[claim].loss_verdict == "n/a"


def test_c1_refuted_where_no_seed_reaches_accuracy_one():
    never = verdicts(lambda c: None, digits=(10, 20), lr=(0.001,), layers=(2,), cell=("RNN",))
    assert never["C1"].verdict == "refuted"
    assert "0/8 seeds" in " ".join(never["C1"].evidence)


def test_evidence_carries_the_numbers(supported, refuted):
    assert "100 digits: exact match 1.00 at step 1000: 8/8 seeds" in " ".join(supported["C1"].evidence)
    assert any("100 digits: exact match 1.00 at step 1000: 0/8 seeds" in e for e in refuted["C1"].evidence)
    # sustained steps to solve: the first of three solved evaluations (the frames evaluate every 100 steps)
    assert any(e.startswith("10 digits lr 0.01 vs lr 0.001 (n=8/8): steps to solve: 10 digits lr 0.01 200 (range 200-200) "
                            "vs lr 0.001 400 (range 400-400), median difference -200 [bootstrap 95% -200, -200], p=0.000155 "
                            "(smallest possible 0.00016)")
               for e in supported["C3"].evidence), supported["C3"].evidence


def test_fewer_than_three_seeds_only_suggest():
    one_seed = verdicts(as_claimed, seeds=(0,))
    assert {r.verdict for r in one_seed.values()} == {"suggested"}
    assert verdicts(against_claims, seeds=(0, 1))["C2"].verdict == "suggested against"


def test_three_seeds_are_undecidable_and_say_so():
    three = verdicts(as_claimed, seeds=(0, 1, 2))
    assert {r.verdict for r in three.values()} == {"undecidable"}
    assert "smallest p-value they allow (0.1)" in " ".join(three["C2"].untested)


def test_claims_the_grid_cannot_test_say_what_would():
    quick = verdicts(as_claimed, digits=(10,), lr=(0.01,), layers=(2,), cell=("RNN",))
    for claim in ("C1", "C2", "C3", "C4", "C5"):
        assert quick[claim].verdict == "not testable"
        assert quick[claim].untested, claim
    assert "--grid seed" in " ".join(quick["C2"].untested)
    assert quick["C6"].verdict == "supported"  # RNN/2 layers/lr 0.01 at the one length there is


def test_unfinished_trials_of_a_partial_sweep_are_left_out_not_counted_unsolved():
    specs = grid(as_claimed, digits=(10, 20), lr=(0.001,), layers=(2,), cell=("RNN",))
    specs = grid(as_claimed, seeds=SEEDS, eval_every=50, digits=(10, 20), lr=(0.001,), layers=(2,), cell=("RNN",))
    specs += [trial(solve_at=None, end_at=100, stop_reason="running", seed=s, digits=10) for s in (15, 16, 17)]
    history, trials = frames(specs)
    result = {r.claim: r for r in check_claims(history, trials)}["C2"]
    assert result.verdict == "supported"  # 3 never-solving 10-digit trials would have made 10 digits slower
    assert "3 unfinished trials (running or error) left out" in result.untested


def test_claims_cli_prints_the_table_or_exits_2(tmp_path, capsys):
    folder = write_experiment(tmp_path / "exp", grid(as_claimed, seeds=SEEDS, eval_every=50, digits=(10, 20), lr=(0.001, 0.01), layers=(2,), cell=("RNN",)))
    assert main([str(folder)]) == 0
    printed = capsys.readouterr().out
    assert f"experiment: {folder}" in printed and "C2 [steps: supported; loss: supported]" in printed and "C5 [steps: not testable; loss: not testable]" in printed
    assert main([str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
