"""benchmarks/gpu_sweep.py without a GPU or Ray: its sweep commands parse as the device run will give them,
the table's arithmetic (member-runs per hour, ratio to one trial per GPU, minutes for the target), flags it cannot
run refused in one line before anything is written, and a run that measured nothing never exits 0."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import sweep_env

from tune_adder.sweep import parse_settings

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_sweep.py"


@pytest.fixture(scope="module")
def gpu_sweep():
    spec = importlib.util.spec_from_file_location("gpu_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(grid="gpu-slice", max_steps=200, eval_every=50, eval_size=2000, out=tmp_path)


def test_the_four_gpu_settings_are_valid_sweeps(gpu_sweep, tmp_path):
    got = []
    for s in gpu_sweep.GPU_SETTINGS:
        settings = parse_settings(gpu_sweep.sweep_command(s, _args(tmp_path), tmp_path / "sweeps")[3:])
        got.append((settings.gpus_per_trial, settings.pack, settings.seeds, settings.grid, settings.max_steps))
    assert got == [
        (1.0, "none", 5, "gpu-slice", 200),
        (0.25, "none", 5, "gpu-slice", 200),
        (0.125, "seeds", 5, "gpu-slice", 200),
        (0.0625, "seeds", 5, "gpu-slice", 200),
    ]


def test_table_rates_ratio_and_target(gpu_sweep):
    def row(label, gpus, pack, steps, wall):
        rate = steps / wall
        return {"label": label, "what": label, "gpus": gpus, "seeds": 5, "pack": pack, "exit": 0, "cut": False,
                "wall_s": wall, "member_steps": steps, "member_steps_per_s": round(rate, 2),
                "member_runs_per_h": round(rate * 3600 / 1000, 1)}  # fmt: skip

    rows = [row("a", 1.0, "none", 6000, 60.0), row("d", 0.0625, "seeds", 90000, 60.0)]
    text = gpu_sweep.table(rows, {"GPU": "test"}, smoke=False)
    assert "| 360.0 | 1.0 | 120.0 |" in text  # 100 member-steps/s = 360 runs/h; 720 runs take 120 min
    assert "| 5400.0 | 15.0 | 8.0 |" in text  # 15x (a), 720 runs in 8 min: the target met
    assert "4320 member-runs/h" in text


def _refusals(tmp_path: Path) -> list[tuple[list[str], str]]:
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--settings", "z"], "--settings 'z' is not valid; choose labels among a, b, c, d"),
        (["--smoke", "--settings", "b"], "--settings 'b' is not valid; choose labels among a, c"),
        (["--smoke", "--settings", ""], "--settings '' is not valid"),
        (["--smoke", "--out", str(tmp_path / "afile")], "--out"),
        (["--smoke", "--out", str(tmp_path / "afile" / "sub")], "--out"),
        (["--smoke", "--seeds", "0"], "setting a: --seeds 0 is not valid"),
        (["--smoke", "--grid", "huge"], "setting a: --grid 'huge' is not valid"),
        (["--smoke", "--budget", "0"], "--budget 0 is not valid"),
        (["--smoke", "--budget", "nan"], "--budget nan is not valid"),
        (["--smoke", "--max-steps", "x"], "--max-steps"),
    ]
    if not torch.cuda.is_available():  # every GPU setting would fail here and the table would be all n/a
        cases.append(([], "no CUDA device here"))
    return cases


def test_a_flag_it_cannot_run_exits_2_with_one_line_and_writes_nothing(gpu_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    for flags, named in _refusals(tmp_path):
        code = gpu_sweep.main([*flags, *([] if "--out" in flags else ["--out", str(out)])])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and named in err, (flags, err)
        assert not out.exists(), flags


def test_from_the_shell_a_bad_out_is_one_line_not_a_traceback(tmp_path):
    (tmp_path / "afile").write_text("x")
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path / "afile")]
    done = subprocess.run(cmd, env=sweep_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "--out" in done.stderr, done.stderr
    assert (tmp_path / "afile").read_text() == "x"


def test_a_run_that_measured_nothing_or_failed_a_setting_is_not_a_success(gpu_sweep, capsys):
    ok = {"label": "a", "exit": 0, "member_steps": 4000}
    cut = {"label": "c", "exit": 130, "member_steps": 900}  # stopped at its share: counted as far as it got
    assert gpu_sweep._verdict([ok, cut]) == 0
    assert gpu_sweep._verdict([]) == 1
    assert gpu_sweep._verdict([{"label": "a", "exit": 2, "member_steps": None}, ok]) == 1  # e.g. no GPU for it
    assert gpu_sweep._verdict([ok, {"label": "c", "exit": 130, "member_steps": 0}]) == 1  # cut before any evaluation
    assert gpu_sweep._verdict([{"label": "b", "exit": 1, "member_steps": 300}]) == 1  # trials failed
    err = capsys.readouterr().err.strip().splitlines()
    assert err[1] == "gpu_sweep.py: settings a failed or measured nothing; see the log above", err
