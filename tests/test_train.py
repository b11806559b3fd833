"""Training: the small adder learns, runs repeat exactly, and a saved run continues as if never stopped."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tune_adder import metrics
from tune_adder.model import ModelConfig
from tune_adder.train import EvalMetrics, Trainer, TrainConfig, fit, load_state, main, save_state

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


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


SMALL_MODEL = ModelConfig(hidden=16, embed_dim=8)
SMALL_TRAIN = TrainConfig(digits=5, lr=0.01, batch_size=32, steps=40, eval_every=10, eval_size=100, probe_size=50)


def test_same_configs_give_the_same_curve_and_another_seed_does_not():
    first = _curve(fit(SMALL_MODEL, SMALL_TRAIN))
    assert first == _curve(fit(SMALL_MODEL, SMALL_TRAIN))
    other_seed = _curve(fit(SMALL_MODEL, TrainConfig(**{**SMALL_TRAIN.__dict__, "seed": 1})))
    assert [r["train_loss"] for r in other_seed] != [r["train_loss"] for r in first]


def test_the_last_step_is_reported_even_off_the_eval_grid():
    results = list(fit(SMALL_MODEL, TrainConfig(**{**SMALL_TRAIN.__dict__, "steps": 25})))
    assert [r.step for r in results] == [10, 20, 25]


def test_stop_when_solved_ends_after_patience_evaluations_at_one():
    trainer = Trainer(ModelConfig(), TrainConfig(digits=3, lr=0.01, steps=2000, eval_every=25, stop_when_solved=True))
    results = list(trainer.run())
    assert trainer.stopped_reason == "solved"
    tail = [r.val_exact_match for r in results[-metrics.SOLVED_PATIENCE :]]
    assert tail == [1.0] * metrics.SOLVED_PATIENCE
    assert results[-1].step < 2000
    if len(results) > metrics.SOLVED_PATIENCE:
        assert results[-metrics.SOLVED_PATIENCE - 1].val_exact_match < 1.0


def test_stop_when_solved_counts_only_solved_evaluations_in_a_row():
    """Three held-out sums make exact match flicker while the adder learns (this config and seed: solved at
    evaluations 7 and 9, unsolved at 8 and 10, then solved for good). The trainer stops where the frames and the
    replay say a solved run ends: at the third solved evaluation in a row, not at the third solved one."""
    from tune_adder.frames import ends_solved
    from tune_adder.replay import solved_prefix

    model_cfg = ModelConfig(cell="RNN", layers=1, hidden=32, embed_dim=16)
    train_cfg = TrainConfig(digits=3, lr=0.03, batch_size=64, steps=400, eval_every=10, eval_size=3, seed=1, device="cpu")
    free = [r.as_dict() for r in fit(model_cfg, train_cfg)]
    solved = [i for i, r in enumerate(free) if r["val_exact_match"] == 1.0]
    expected = solved_prefix(free)
    assert len(solved) >= 3 and solved[2] + 1 < len(expected), "".join("1" if r["val_exact_match"] == 1.0 else "0" for r in free)
    trainer = Trainer(model_cfg, TrainConfig(**{**train_cfg.__dict__, "stop_when_solved": True}))
    stopped = [r.as_dict() for r in trainer.run()]
    assert trainer.stopped_reason == "solved" and ends_solved(stopped)
    assert [r["step"] for r in stopped] == [r["step"] for r in expected]
    assert not any(ends_solved(stopped[:n]) for n in range(len(stopped)))  # it did not run past a solved streak

def test_a_non_finite_loss_ends_the_run_as_diverged():
    trainer = Trainer(SMALL_MODEL, SMALL_TRAIN)
    with torch.no_grad():
        trainer.model.head.bias.fill_(float("inf"))  # the loss becomes NaN at the first step
    results = list(trainer.run())
    assert len(results) == 1 and results[0].step == SMALL_TRAIN.eval_every
    assert results[0].diverged and trainer.stopped_reason == "diverged"
    assert not math.isfinite(results[0].train_loss)


def test_state_is_plain_cpu_data_and_a_mismatched_model_is_refused(tmp_path):
    trainer = Trainer(SMALL_MODEL, SMALL_TRAIN)
    next(trainer.run())
    path = tmp_path / "deep" / "state.pt"
    save_state(trainer.state_dict(), path)
    assert [p.name for p in path.parent.iterdir()] == ["state.pt"]  # no temp file left behind
    state = load_state(path)
    assert state["step"] == 10 and all(t.device.type == "cpu" for t in state["model"].values())
    with pytest.raises(ValueError, match="model_config"):
        Trainer(ModelConfig(hidden=32, embed_dim=8), SMALL_TRAIN, state)
    finished = Trainer(SMALL_MODEL, SMALL_TRAIN, state)
    assert [r.step for r in finished.run()] == [20, 30, 40]
    assert list(Trainer(SMALL_MODEL, SMALL_TRAIN, finished.state_dict()).run()) == []
    longer = TrainConfig(**{**SMALL_TRAIN.__dict__, "steps": 50})
    assert [r.step for r in Trainer(SMALL_MODEL, longer, finished.state_dict()).run()] == [50]


@pytest.mark.parametrize(
    "field, value",
    [
        ("digits", 0),
        ("digits", 2.5),
        ("digits", "10"),
        ("lr", 0),
        ("lr", -0.1),
        ("lr", float("nan")),
        ("lr", float("inf")),
        ("lr", "0.1"),
        ("lr", 1e38),
        ("batch_size", 0),
        ("steps", 0),
        ("eval_every", 0),
        ("eval_size", 0),
        ("seed", -1),
        ("device", "tpu"),
        ("stop_when_solved", "yes"),
    ],
)
def test_bad_train_config_names_field_and_value(field, value):
    with pytest.raises(ValueError, match=re.escape(f"{field}={value!r}: must be")):
        TrainConfig(**{field: value})


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "tune_adder.train", *args], capture_output=True, text=True, cwd=cwd or ROOT, env=ENV
    )


def test_cli_trains_and_prints_json_metrics_last(tmp_path):
    state = tmp_path / "final.pt"
    done = _cli("--digits", "3", "--lr", "0.01", "--steps", "60", "--eval-every", "30", "--eval-size", "200",
                "--hidden", "32", "--json", "--save-state", str(state))
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(metrics.EVAL_METRICS) <= set(row) and row["step"] == 60 and row["stop_reason"] == "completed"
    assert "completed after 60 steps" in done.stdout
    assert "train" in done.stderr  # the progress bar
    assert load_state(state)["step"] == 60
    assert not set(metrics.PROBE_COLUMNS) & set(row)  # probes only when asked


def test_cli_probe_prints_how_far_the_model_generalises():
    done = _cli("--digits", "3", "--lr", "0.01", "--steps", "30", "--eval-every", "30", "--eval-size", "100",
                "--hidden", "16", "--embed-dim", "8", "--probe", "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(metrics.PROBE_COLUMNS) <= set(row)
    assert row["generalises_to"] == 3 and row["generalises_beyond_trained"] is False  # 30 steps learn nothing long
    assert "generalises no further than its trained 3 digits" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--digits", "0"], "digits=0"),
        (["--digits", "1.5"], "digits='1.5'"),
        (["--base", "17"], "base=17"),
        (["--base", "1"], "base=1"),
        (["--cell", "Transformer"], "cell='Transformer'"),
        (["--lr", "nan"], "lr=nan"),
        (["--lr", "-1"], "lr=-1.0"),
        (["--lr", "0"], "lr=0.0"),
        (["--lr", "fast"], "lr='fast'"),
        (["--layers", "0"], "layers=0"),
        (["--hidden", "0"], "hidden=0"),
        (["--batch-size", "0"], "batch_size=0"),
        (["--steps", "0"], "steps=0"),
        (["--steps", "ten"], "steps='ten'"),
        (["--device", "meta"], "device='meta'"),  # a torch device, but not one to train on
        (["--device", "mps"], "device='mps'"),
        (["--device", "xpu"], "device='xpu'"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    state = tmp_path / "out" / "state.pt"
    with pytest.raises(SystemExit) as exited:
        main([*args, "--save-state", str(state)])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "must be" in err
    assert not (tmp_path / "out").exists()


def test_cli_bad_input_from_the_shell_has_no_traceback(tmp_path):
    done = _cli("--cell", "Transformer", "--save-state", str(tmp_path / "state.pt"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "python -m tune_adder.train: error: cell='Transformer': must be one of RNN, LSTM, GRU"
    ]
    assert list(tmp_path.iterdir()) == []


def test_loss_is_cross_entropy_over_every_position():
    from tune_adder.train import _loss

    logits, total = torch.randn(6, 9, 16) * 5, torch.randint(0, 16, (6, 9))
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 16), total.reshape(-1))
    assert torch.allclose(_loss(logits, total), expected, rtol=1e-6, atol=1e-6)


def _cli_limited(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """The CLI with an 8 GiB address-space cap, so a run that does allocate fails fast instead of swapping the box."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    cmd = [sys.executable, "-m", "tune_adder.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout, preexec_fn=cap, env=ENV)


@pytest.mark.parametrize(
    "args, field",
    [(["--digits", "100000"], "digits"), (["--eval-size", "1000000000"], "eval_size"), (["--batch-size", "100000000"], "batch_size")],
    ids=["digits", "eval-size", "batch-size"],
)
def test_cli_refuses_a_run_too_big_for_this_machine_before_allocating(args, field):
    done = _cli_limited(*args, "--steps", "10")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "memory" in lines[0] and field in lines[0], lines


@pytest.mark.parametrize("where", ["a-folder", "a-folder-to-be", "empty", "under-a-file", "unwritable"])
def test_cli_checks_save_state_before_training(where, tmp_path):
    (tmp_path / "afile").write_text("x")
    target = {"a-folder": str(tmp_path), "a-folder-to-be": str(tmp_path / "states") + os.sep, "empty": "",
              "under-a-file": str(tmp_path / "afile" / "s.pt"), "unwritable": "/proc/tune_adder_state/s.pt"}[where]
    before = sorted(tmp_path.rglob("*"))
    done = _cli_limited("--digits", "3", "--steps", "300", "--eval-every", "100", "--save-state", target)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "save_state" in lines[0], lines  # one line, before the progress bar starts
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(("digits", "steps", "slow"), [("3", "1000000", False), ("3000", "100000", True)])
def test_cli_ctrl_c_is_one_line_and_exit_130_not_a_traceback(tmp_path, digits, steps, slow):
    """SIGINT (what Ctrl-C sends) once the progress bar runs: the run ends with one line, the shell's code 130.
    A run over TIMED_DIGITS digits that will train for hours (3,000 digits x 100,000 steps) says so in one line
    before it starts (issue 18 item 7: 20,000 digits sat minutes on its first step in silence); a short-digit run,
    however many steps, times nothing and says nothing."""
    import select
    import signal
    import time

    cmd = [sys.executable, "-m", "tune_adder.train", "--digits", digits, "--steps", steps, "--eval-every", "100000",
           "--eval-size", "100", "--save-state", str(tmp_path / "state.pt")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = b"", time.time() + 120
    try:
        while b"train:" not in seen and proc.poll() is None and time.time() < deadline:  # the bar: training has begun
            if select.select([proc.stderr], [], [], 1)[0]:
                seen += os.read(proc.stderr.fileno(), 4096)
        assert b"train:" in seen, seen
        warned = [line for line in seen.decode().splitlines() if "this run will be slow" in line]
        assert len(warned) == int(slow), seen
        if slow:
            assert warned[0].startswith("python -m tune_adder.train: this run will be slow: about ") and " h or more for 100,000 steps" in warned[0]
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = (seen + rest).decode()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "python -m tune_adder.train: interrupted", err[-2000:]
    assert out == b"" and not (tmp_path / "state.pt").exists()


def test_cli_threads_sets_torchs_cpu_threads(capsys):
    """README: --threads (default 1) sets PyTorch's CPU threads."""
    from tune_adder.train import main

    before = torch.get_num_threads()
    try:
        assert main(["--digits", "2", "--steps", "10", "--eval-every", "10", "--eval-size", "20", "--threads", "3"]) == 0
        assert torch.get_num_threads() == 3
        assert main(["--digits", "2", "--steps", "10", "--eval-every", "10", "--eval-size", "20"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_json_line_writes_non_finite_values_as_null():
    """README: --json writes non-finite values (a diverged run's loss) as null, so the line is strict JSON."""
    import json

    from tune_adder.train import _json_safe

    row = _json_safe({"train_loss": float("nan"), "val_loss": float("inf"), "val_exact_match": 0.5, "step": 10})
    assert json.loads(json.dumps(row, allow_nan=False)) == {"train_loss": None, "val_loss": None, "val_exact_match": 0.5, "step": 10}


def test_timing_a_long_runs_pace_leaves_the_run_untouched():
    """slow_run_warning times a throwaway model: the caller's RNG, and so the run it is about to start, are as
    they were; a run at or under TIMED_DIGITS is not timed at all."""
    from tune_adder.train import TIMED_DIGITS, slow_run_warning, step_seconds

    model_cfg, train_cfg = ModelConfig(layers=1, hidden=8, embed_dim=4), TrainConfig(digits=TIMED_DIGITS + 50, steps=10, batch_size=8)
    before = torch.get_rng_state()
    assert step_seconds(model_cfg, train_cfg, torch.device("cpu")) > 0
    assert torch.equal(torch.get_rng_state(), before)
    assert slow_run_warning(model_cfg, TrainConfig(digits=TIMED_DIGITS, steps=10**9), torch.device("cpu")) is None
