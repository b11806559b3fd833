"""benchmarks/gpu_sweep.py without a GPU or Ray: its sweep commands parse as the device run will give them,
and the table's arithmetic (member-runs per hour, ratio to one trial per GPU, minutes for the target)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

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
