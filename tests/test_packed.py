"""Packed training: every member of a pack follows its solo Trainer's curve, moves to and from a plain
AdderRNN, keeps its own Adam, is cut off alone when it diverges, and resumes exactly."""

import math

import pytest
import torch

from tune_adder import metrics
from tune_adder.model import CELLS, AdderRNN, ModelConfig
from tune_adder.packed_model import PackedAdder, member_losses, member_names
from tune_adder.packed_optim import PackedAdam
from tune_adder.packed_train import PackTrainer
from tune_adder.train import Trainer, TrainConfig, _loss, load_state, save_state

torch.set_num_threads(1)

SMALL = dict(digits=5, batch_size=32, steps=50, eval_every=10, eval_size=100, probe_size=50)
MEMBERS = ((0, 0.01), (1, 0.003), (7, 0.03))  # (seed, lr) of each member


def _small_model(cell: str = "RNN", layers: int = 1) -> ModelConfig:
    return ModelConfig(cell=cell, layers=layers, hidden=16, embed_dim=8)


def _configs(members=MEMBERS, **overrides) -> list[TrainConfig]:
    return [TrainConfig(**{**SMALL, **overrides}, seed=seed, lr=lr) for seed, lr in members]


def _curve(results) -> list[dict]:
    # steps_per_s is wall-clock speed (the pack's, not the member's): everything else must match.
    # NaN is written "nan" so that a diverged curve equals itself.
    return [{k: "nan" if v != v else v for k, v in r.as_dict().items() if k != "steps_per_s"} for r in results]


def _member_curve(pack_results: list[list], i: int) -> list[dict]:
    return _curve(r[i] for r in pack_results if r[i] is not None)


def _assert_same_curve(packed: list[dict], solo: list[dict]) -> None:
    # Float rounding only: bmm vs mm, a hand-written cell vs PyTorch's, PackedAdam vs fused Adam.
    assert [r["step"] for r in packed] == [r["step"] for r in solo]
    for p, s in zip(packed, solo):
        assert p == pytest.approx(s, rel=1e-4, abs=1e-6), (p, s)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_every_member_follows_its_solo_trainers_curve(cell, layers):
    model_cfg, cfgs = _small_model(cell, layers), _configs()
    trainer = PackTrainer(model_cfg, cfgs)
    pack = list(trainer.run())
    assert [r.step for r in pack[-1]] == [50, 50, 50]
    for i, cfg in enumerate(cfgs):
        solo = Trainer(model_cfg, cfg)
        _assert_same_curve(_member_curve(pack, i), _curve(solo.run()))
        # The weights too, looser: 50 steps of rounding differences add up in the rarely-moved weights.
        for name, w in trainer.member_model(i).state_dict().items():
            torch.testing.assert_close(w, solo.model.state_dict()[name], rtol=1e-3, atol=1e-6, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("cell", CELLS)
def test_members_move_to_and_from_a_plain_adder(cell):
    cfg = ModelConfig(cell=cell, layers=2, hidden=12, embed_dim=6, base=7)
    torch.manual_seed(0)
    members = [AdderRNN(cfg) for _ in range(3)]
    pack = PackedAdder.from_members(members)
    a, b = torch.randint(0, 7, (2, 3, 5, 9))  # each (K, B, T)
    logits = pack(a, b)
    assert logits.shape == (3, 5, 9, 7)
    for i, member in enumerate(members):
        state = pack.member_state_dict(i)
        assert list(state) == list(member.state_dict())
        assert all(torch.equal(state[n], w) for n, w in member.state_dict().items())
        torch.testing.assert_close(logits[i], member(a[i], b[i]), rtol=1e-5, atol=1e-6)
        back = AdderRNN(cfg)
        back.load_state_dict(state)  # strict: the same names and shapes
        assert all(torch.equal(w, member.state_dict()[n]) for n, w in back.state_dict().items())
    # The pack's loss is the sum of the members' own losses: each member's gradient is its solo gradient.
    total = torch.randint(0, 7, (3, 5, 9))
    member_losses(logits, total).sum().backward()
    for i, member in enumerate(members):
        _loss(member(a[i], b[i]), total[i]).backward()
        grads = {n: getattr(pack, packed).grad[i] for n, packed in member_names(cfg).items()}
        for n, w in member.named_parameters():
            torch.testing.assert_close(grads[n], w.grad, rtol=1e-5, atol=1e-7)
    pack.load_member(1, members[2].state_dict())
    assert all(torch.equal(w, members[2].state_dict()[n]) for n, w in pack.member_state_dict(1).items())
    assert all(torch.equal(w, members[0].state_dict()[n]) for n, w in pack.member_state_dict(0).items())


def test_packed_adam_is_torch_adam_per_member_and_inactive_members_stay_put():
    torch.manual_seed(0)
    shapes, lrs = [(4, 5), (7,)], [0.01, 0.003, 0.1]
    start = [torch.randn(3, *s) for s in shapes]
    packed = [torch.nn.Parameter(t.clone()) for t in start]
    opt = PackedAdam(packed, torch.tensor(lrs, dtype=torch.float64))
    solo = [[torch.nn.Parameter(t[i].clone()) for t in start] for i in range(3)]
    solo_opts = [torch.optim.Adam(params, lr=lr) for params, lr in zip(solo, lrs)]
    for step in range(8):
        grads = [torch.randn(3, *s) for s in shapes]
        active = torch.tensor([True, True, step not in (2, 3)])
        if not active[2]:
            grads[0][2] = math.nan  # an inactive member's NaN must not reach it or anyone else
        before = [(p[2].clone(), m[2].clone(), v[2].clone()) for p, m, v in zip(packed, opt.exp_avg, opt.exp_avg_sq)]
        for p, g in zip(packed, grads):
            p.grad = g.clone()
        opt.step(active)
        if not active[2]:
            after = [(p[2], m[2], v[2]) for p, m, v in zip(packed, opt.exp_avg, opt.exp_avg_sq)]
            assert all(torch.equal(x, y) for old, new in zip(before, after) for x, y in zip(old, new))
        for i in range(3):
            if active[i]:
                for p, g in zip(solo[i], grads):
                    p.grad = g[i].clone()
                solo_opts[i].step()
    assert opt.steps.tolist() == [8, 8, 6]
    for i in range(3):
        for p, q in zip(packed, solo[i]):
            torch.testing.assert_close(p[i].detach(), q.detach(), rtol=1e-6, atol=1e-7)


def test_members_score_carry_chains_and_longer_sums_as_their_solo_runs_do():
    """3-digit sums at lr 0.03: by step 60 the held-out, carry-chain and twice-as-long exact matches are non-zero
    and differ from one another, so a member that reported one set's score under another's name would show."""
    model_cfg = ModelConfig(cell="GRU", layers=1, hidden=32, embed_dim=8)
    cfgs = [TrainConfig(digits=3, lr=0.03, batch_size=64, steps=100, eval_every=20, eval_size=100, probe_size=50, seed=seed)
            for seed in (0, 1)]  # fmt: skip
    pack = list(PackTrainer(model_cfg, cfgs).run())
    for i, cfg in enumerate(cfgs):
        packed, solo = _member_curve(pack, i), _curve(Trainer(model_cfg, cfg).run())
        scores = [(r["val_exact_match"], r["carry_chain_exact_match"], r["longer_exact_match"]) for r in solo]
        assert any(0 < min(s) and len(set(s)) == 3 for s in scores), scores
        _assert_same_curve(packed, solo)


def test_a_diverging_member_ends_alone_and_the_others_keep_their_curves():
    model_cfg, cfgs = _small_model("GRU"), _configs(steps=30)
    trainer = PackTrainer(model_cfg, cfgs)
    with torch.no_grad():
        trainer.model.head_bias[1] = math.inf  # member 1's loss is NaN from the first step
    start = trainer.model.member_state_dict(1)
    pack = list(trainer.run())
    assert trainer.stopped_reasons == ["completed", "diverged", "completed"]
    assert pack[0][1].diverged and math.isnan(pack[0][1].train_loss)
    assert all(r[1] is None for r in pack[1:])  # ended: reported once, then left out
    assert all(torch.equal(w, start[n]) for n, w in trainer.member_model(1).state_dict().items())  # never moved
    for i in (0, 2):
        assert all(math.isfinite(r["train_loss"]) and not r["diverged"] for r in _member_curve(pack, i))
        _assert_same_curve(_member_curve(pack, i), _curve(Trainer(model_cfg, cfgs[i]).run()))


@pytest.mark.parametrize("diverging_member", [None, 0])
def test_save_and_resume_gives_the_uninterrupted_curves(tmp_path, diverging_member):
    model_cfg, cfgs = _small_model("LSTM"), _configs(steps=30)

    def trainer(state=None):
        t = PackTrainer(model_cfg, cfgs, state)
        if state is None and diverging_member is not None:
            with torch.no_grad():
                t.model.head_bias[diverging_member] = math.inf
        return t

    uninterrupted = list(trainer().run())
    first = trainer()
    run = first.run()
    head = [next(run)]
    save_state(first.state_dict(), tmp_path / "pack.pt")
    del first, run
    resumed = trainer(load_state(tmp_path / "pack.pt"))
    rest = list(resumed.run())
    assert [r.step for r in rest[0] if r is not None] == [20] * (3 if diverging_member is None else 2)
    for i in range(3):
        assert _member_curve(head + rest, i) == _member_curve(uninterrupted, i)
    assert resumed.stopped_reasons == ["completed" if i != diverging_member else "diverged" for i in range(3)]


def test_a_completed_pack_carries_on_when_resumed_with_more_steps():
    model_cfg = _small_model()
    first = PackTrainer(model_cfg, _configs(steps=20))
    head = list(first.run())
    assert first.stopped_reasons == ["completed"] * 3
    again = PackTrainer(model_cfg, _configs(steps=20), first.state_dict())
    assert list(again.run()) == [] and again.stopped_reasons == ["completed"] * 3
    resumed = PackTrainer(model_cfg, _configs(steps=30), first.state_dict())
    rest = list(resumed.run())
    uninterrupted = list(PackTrainer(model_cfg, _configs(steps=30)).run())
    for i in range(3):
        assert _member_curve(head + rest, i) == _member_curve(uninterrupted, i)


def test_members_stop_when_solved_one_by_one():
    # 6-bit sums in base 2: lr 0.03 solves them in about 50 steps, lr 1e-4 does not.
    model_cfg = ModelConfig(base=2, hidden=16, embed_dim=4, layers=1)
    common = dict(digits=6, batch_size=32, steps=80, eval_every=10, eval_size=100, probe_size=20, stop_when_solved=True)
    cfgs = [TrainConfig(**common, seed=0, lr=lr) for lr in (0.03, 1e-4)]
    trainer = PackTrainer(model_cfg, cfgs)
    pack = list(trainer.run())
    assert trainer.stopped_reasons == ["solved", "completed"]
    solved = _member_curve(pack, 0)
    assert [r["val_exact_match"] for r in solved[-metrics.SOLVED_PATIENCE :]] == [1.0] * metrics.SOLVED_PATIENCE
    assert solved[-1]["step"] < 80 and _member_curve(pack, 1)[-1]["step"] == 80
    assert all(r[0] is None for r in pack[len(solved) :])
    solo = Trainer(model_cfg, cfgs[0])
    _assert_same_curve(solved, _curve(solo.run()))
    assert solo.stopped_reason == "solved"
    assert trainer.probe(0) == solo.probe()


def test_members_may_differ_only_in_seed_and_lr():
    with pytest.raises(ValueError, match=r"train_cfgs\[1\]\.digits=6 .* only in seed and lr"):
        PackTrainer(_small_model(), [TrainConfig(**SMALL), TrainConfig(**{**SMALL, "digits": 6})])
    with pytest.raises(ValueError, match="dropout"):
        PackTrainer(ModelConfig(dropout=0.1, hidden=16, embed_dim=8), _configs())
