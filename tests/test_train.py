"""Training: the small adder learns, runs repeat exactly, and a saved run continues as if never stopped."""

import torch

from tune_adder import metrics
from tune_adder.model import ModelConfig
from tune_adder.train import EvalMetrics, Trainer, TrainConfig, fit, load_state, save_state

torch.set_num_threads(1)


def _curve(results):
    # steps_per_s is wall-clock speed: everything else must repeat exactly
    return [{k: v for k, v in r.as_dict().items() if k != "steps_per_s"} for r in results]


def test_three_digit_adder_is_solved_within_a_few_hundred_steps():
    results = list(fit(ModelConfig(), TrainConfig(digits=3, lr=0.01, steps=300, eval_every=50)))
    assert [r.step for r in results] == [50, 100, 150, 200, 250, 300]
    assert results[-1].val_exact_match == 1.0
    assert results[-1].val_digit_acc == 1.0
    assert results[-1].samples_seen == 300 * 200
    assert all(isinstance(r, EvalMetrics) and not r.diverged for r in results)
    assert tuple(results[-1].as_dict()) == metrics.EVAL_METRICS


def test_save_restore_continue_gives_the_uninterrupted_curve(tmp_path):
    model_cfg = ModelConfig(cell="LSTM", dropout=0.1, hidden=16, embed_dim=8)
    train_cfg = TrainConfig(digits=4, lr=0.01, batch_size=32, steps=60, eval_every=20, eval_size=100, probe_size=50)
    uninterrupted = list(fit(model_cfg, train_cfg))

    trainer = Trainer(model_cfg, train_cfg)
    run = trainer.run()
    first = [next(run)]
    save_state(trainer.state_dict(), tmp_path / "state.pt")
    del trainer, run
    torch.manual_seed(12345)  # the global RNG moves on in between: the state must carry it
    resumed = Trainer(model_cfg, train_cfg, load_state(tmp_path / "state.pt"))
    rest = list(resumed.run())
    assert [r.step for r in rest] == [40, 60]
    assert _curve(first + rest) == _curve(uninterrupted)
    assert resumed.stopped_reason == "completed"
