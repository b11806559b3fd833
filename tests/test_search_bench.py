"""benchmarks/search_sim.py and bench_search.py: the simulated searches count compute as the sweep spends it,
and the real sweep's replay (Ray's ASHA on --asha-metric, one trial at a time) stops exactly the trials the
simulation stops."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.analysis_frames import grid, write_experiment
from tests.conftest import sweep_env
from tests.test_sweep import sweep
from tune_adder.metrics import PROBE_COLUMNS
from tune_adder.spaces import grid_configs

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(BENCH))
sim = _load("search_sim")
bench = _load("bench_search")


def _table(solve_steps: list[float | None], eval_every: int = 100, max_steps: int = 1000):
    """A table of configs in this order, each solving at the given step (None: never), exact match 0 before."""
    configs = [{"digits": 10, "lr": 0.001 * (i + 1), "layers": 2, "cell": "RNN"} for i in range(len(solve_steps))]
    curves = {}
    for cfg, solve in zip(configs, solve_steps):
        steps = range(eval_every, max_steps + 1, eval_every)
        curves[sim.key_of(cfg)] = [
            {"step": s, "val_exact_match": 1.0 if solve is not None and s >= solve else 0.0, "val_loss": 1.0 / s} for s in steps
        ]
    return sim.Table(10, 0, eval_every, max_steps, configs, curves)


def test_fifo_counts_every_step_spent_until_the_best_config_first_reports_solved():
    table = _table([None, 500, 300, 300])
    assert table.best_steps == 300
    one = sim.simulate(table, sim.Method("fifo"), workers=1, rng_seed=0)
    assert one.found_at == 1000 + 1000 + 300  # two whole trials, then the best's solve step
    assert one.total == 4000 and [steps for _, steps in one.runs] == [1000] * 4
    assert one.trace == [(1000 + 500, 500), (2300, 300)]  # the anytime trace: each better solve as it is seen
    two = sim.simulate(table, sim.Method("fifo"), workers=2, rng_seed=0)
    # Trials 0 and 1 run from 0; trial 2 starts at 1000 and solves at 1300, when trial 3 has run 300 steps too.
    assert two.found_at == 1000 + 1000 + 300 + 300
    solve = sim.simulate(table, sim.Method("solve", stop_when_solved=True), workers=1, rng_seed=0)
    assert [steps for _, steps in solve.runs] == [1000, 700, 500, 500]  # 3 solved evaluations in a row end a trial


def test_the_floor_counts_one_evaluation_per_config_ahead_of_the_best_and_no_scheduler_beats_it():
    table = _table([None, 500, 300, 300, 200, None])
    assert table.floor_steps(workers=1) == 4 * 100 + 200  # four configs ahead of the first best, each reports once
    assert table.floor_steps(workers=2) == 3 * 100 + 200  # one of them may still be running when the best starts
    assert math.isinf(_table([None, None]).floor_steps(1))
    for workers in (1, 2, 3):
        for grace, rf in ((100, 2), (100, 4), (200, 3)):
            method = sim.Method("asha", scheduler="asha", metric="val_loss", grace_period=grace, reduction_factor=rf)
            out = sim.simulate(table, method, workers=workers, rng_seed=0)
            assert table.floor_steps(workers) <= out.found_at < math.inf


def test_a_table_nobody_solves_is_never_found():
    table = _table([None, None])
    out = sim.simulate(table, sim.Method("fifo"), workers=2, rng_seed=0)
    assert math.isinf(table.best_steps) and math.isinf(out.found_at) and out.total == 2000


def _full_grid_table(score) -> "sim.Table":
    """The full grid's 36 configs at one length, exact match 0 until the last step and `score(config)` there."""
    import itertools

    configs = [{"digits": 10, "lr": lr, "layers": n, "cell": c}
               for lr, n, c in itertools.product((0.001, 0.01, 0.1), (1, 2, 3, 4), ("RNN", "LSTM", "GRU"))]  # fmt: skip
    curves = {sim.key_of(c): [{"step": s, "val_exact_match": score(c) if s == 1000 else 0.0, "val_loss": 1.0}
                              for s in range(100, 1001, 100)] for c in configs}  # fmt: skip
    return sim.Table(10, 0, 100, 1000, configs, curves)


def test_a_random_order_is_a_seeded_shuffle_of_the_grid():
    table = _table([None, 500, 300, 300, 200, None, 700, 400])
    grid_order = [sim.key_of(c) for c in table.configs]

    def order(seed):
        return [key for key, _ in sim.simulate(table, sim.Method("random", search="random"), workers=1, rng_seed=seed).runs]

    assert sorted(order(0)) == sorted(grid_order) and len(order(0)) == len(grid_order)  # each config once
    assert order(0) != grid_order and order(1) != grid_order and order(0) != order(1)
    assert order(0) == order(0)  # the searcher seed makes it repeatable


def test_tpe_is_told_each_trials_last_exact_match_and_learns_from_it():
    """Cell GRU and lr 0.01 score best at the last step. Once TPE's 10 random start-up trials are told, it samples
    the 4 best of 36 configs far more often than chance (1 in 9): 11 of its next 24 trials under seed 0 (2 or so
    if it is never told)."""
    best = lambda c: c["cell"] == "GRU" and c["lr"] == 0.01  # noqa: E731
    table = _full_grid_table(lambda c: (0.6 if c["cell"] == "GRU" else 0.0) + (0.4 if c["lr"] == 0.01 else 0.0))
    runs = sim.simulate(table, sim.Method("tpe", search="tpe"), workers=1, rng_seed=0).runs
    assert len(runs) == 36
    assert sum(best(dict(zip(sim.FACTORS, key))) for key, _ in runs[12:]) >= 8

    searcher = sim._Searcher(table, sim.Method("tpe", search="tpe"), rng_seed=0)  # what simulate tells, trial by trial
    for trial_id in range(3):
        searcher.next(trial_id)
    searcher.complete(0, {"step": 1000, "val_exact_match": 0.25})
    searcher.complete(1, {"step": 1000, "val_exact_match": math.nan})  # refused by Optuna, as under Ray: not told
    told = searcher.study.trials
    assert (told[0].state.name, told[0].value) == ("COMPLETE", 0.25) and told[1].state.name == "RUNNING"
    with pytest.raises(KeyError):  # a trial never asked for is a bug in the simulation, not swallowed
        searcher.complete(7, {"step": 1000, "val_exact_match": 0.5})


def test_summary_takes_ratios_against_the_fifo_grid():
    rows = pd.DataFrame([
        {"method": "fifo-grid", "digits": 10, "rep": r, "found_at": 1000.0, "total_steps": 4000} for r in range(4)
    ] + [
        {"method": "asha-grid", "digits": 10, "rep": r, "found_at": f, "total_steps": 1000} for r, f in enumerate([200.0, 300, 400, math.inf])
    ])  # fmt: skip
    table = bench.summarise(rows).set_index("method")
    assert table.loc["asha-grid", "found_share"] == 0.75
    assert table.loc["asha-grid", "found_median"] == 350 and table.loc["asha-grid", "found_ratio"] == 0.35
    assert table.loc["asha-grid", "found_hi"] == math.inf and table.loc["asha-grid", "total_ratio"] == 0.25
    wide = bench.wide_markdown(table.reset_index()).splitlines()
    assert wide[2:] == ["| fifo-grid | 1,000 (1.00x) | 1.00x |", "| asha-grid | 350 (0.35x), found in 75% | 0.35x |"]


QUICK10 = [c for c in grid_configs("quick", 10)]
SOLVE = {(0.003, "RNN"): 450, (0.03, "RNN"): 250, (0.003, "GRU"): None, (0.03, "GRU"): 350}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The quick grid's 10-digit configs, 2 seeds, 600 steps: exact match sits at 0 until step 300 for every
    config (ASHA's first rung ties on it) while the loss ranks them from the start."""
    specs = grid(lambda c: SOLVE[(c["lr"], c["cell"])], seeds=(0, 1), digits=(10,), lr=(0.003, 0.03), cell=("RNN", "GRU"))
    for spec in specs:
        spec.update(eval_every=50)
        spec["config"]["max_steps"] = 600
    folder = write_experiment(tmp_path_factory.mktemp("data") / "quick10", specs, {"grid": "quick", "eval_every": 50})
    history = pd.read_parquet(folder / "history.parquet")
    history.loc[history["step"] < 300, "val_exact_match"] = 0.0
    history.to_parquet(folder / "history.parquet")
    return folder


@pytest.mark.parametrize(("metric", "solve"), [("val_loss", False), ("val_exact_match", False), ("val_loss", True)])
def test_the_sweeps_asha_replay_stops_the_trials_the_simulation_stops(dataset, metric, solve, tmp_path, ray_address):
    args = ["--replay", str(dataset), "--grid", "quick", "--digits", "10", "--scheduler", "asha", "--asha-metric", metric,
            "--grace-period", "100", "--reduction-factor", "2", "--cpus-per-trial", "2", "--name", "r", "--quiet",
            *(["--stop-when-solved"] if solve else [])]  # fmt: skip
    out = sweep(args, tmp_path, ray_address)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "r" / "trials.parquet")
    order = bench._creation_order(tmp_path / "r", trials["trial_id"])
    trials = trials.assign(order=trials["trial_id"].map(order)).sort_values("order")
    ray_runs = [(sim.key_of(r), int(r["steps_trained"])) for r in trials.to_dict("records")]

    history = pd.read_parquet(dataset / "history.parquet")
    table = next(t for t in sim.load_tables(history, pd.read_parquet(dataset / "trials.parquet"), grid="quick") if t.seed == 0)
    method = sim.Method("asha", scheduler="asha", metric=metric, grace_period=100, reduction_factor=2, stop_when_solved=solve)
    expected = sim.simulate(table, method, workers=1, rng_seed=0).runs
    assert ray_runs == expected
    if solve:  # a solved trial ends at its third solved evaluation in a row, two evaluations after it solved
        solved = trials[trials["stop_reason"] == "solved"]
        assert len(solved) >= 1 and (solved["steps_trained"] == solved["steps_to_solve"] + 100).all()
        assert solved[list(PROBE_COLUMNS)].isna().all().all()  # the recorded probes are of a model trained to 600
        return
    stopped = [steps for _, steps in expected if steps < 600]
    # On the loss ASHA cuts at its first rung; on exact match that rung ties at 0 and nothing is cut there.
    assert (min(stopped) == 100) if metric == "val_loss" else (min(stopped, default=600) > 100)


@pytest.fixture(scope="module")
def full10(tmp_path_factory):
    """The full grid's 36 configs at 10 digits under seed 0: the smallest dataset bench_search.py accepts."""
    specs = grid(lambda c: 300 if c["lr"] == 0.01 else None, seeds=(0,), digits=(10,), lr=(0.001, 0.01, 0.1),
                 layers=(1, 2, 3, 4), cell=("RNN", "LSTM", "GRU"))
    return write_experiment(tmp_path_factory.mktemp("data") / "full10", specs, {"grid": "full", "eval_every": 100})


def _unusable(tmp_path: Path, full10: Path) -> list[tuple[list[str], str]]:
    empty, corrupt, afile = tmp_path / "empty", tmp_path / "corrupt", tmp_path / "afile"
    empty.mkdir()
    for name in ("history.parquet", "trials.parquet"):
        pd.read_parquet(full10 / name).iloc[:0].to_parquet(empty / name)
    corrupt.mkdir()
    (corrupt / "history.parquet").write_text("not parquet")
    (corrupt / "trials.parquet").write_text("not parquet")
    afile.write_text("x")
    return [
        ([str(tmp_path / "nowhere")], "no history.parquet or trials.parquet"),
        ([str(empty)], "no operand length has every full-grid config"),
        ([str(corrupt)], "is not readable as a sweep's frames"),
        ([str(full10), "--reps", "0"], "--reps 0 is not valid"),
        ([str(full10), "--reps", "-2"], "--reps -2 is not valid"),
        ([str(full10), "--workers", "0"], "--workers 0 is not valid"),
        ([str(full10), "--workers", "-1"], "--workers -1 is not valid"),
        ([str(full10), "--ray-check", "7"], "--ray-check 7 is not a length the dataset recorded whole under seed 0; choose one of: 10"),
        ([str(full10), "--real-check", str(tmp_path / "nowhere")], "--real-check"),
        ([str(full10), "--reps", "many"], "--reps"),
        ([str(full10), "--out", str(afile)], "--out"),
        ([str(full10), "--out", str(afile / "sub")], "--out"),
    ]


def test_bench_search_refuses_a_dataset_or_flag_it_cannot_use_in_one_line_writing_nothing(full10, tmp_path, capsys):
    out = tmp_path / "out"
    for argv, named in _unusable(tmp_path, full10):
        code = bench.main([*argv, *([] if "--out" in argv else ["--out", str(out)])])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and named in err, (argv, err)
        assert not out.exists(), argv


def test_bench_search_from_the_shell_refuses_without_a_traceback_and_by_default_writes_outside_the_committed_results(
    full10, tmp_path
):
    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(BENCH / "bench_search.py"), str(full10), *args]
        return subprocess.run(cmd, cwd=tmp_path, env=sweep_env(), capture_output=True, text=True, timeout=600)

    refused = run("--ray-check", "7")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "--ray-check 7" in refused.stderr and list(tmp_path.iterdir()) == []
    measured = {p.name: p.read_bytes() for p in (BENCH / "measured").iterdir()}
    done = run("--reps", "1", "--workers", "1")  # the documented command, shrunk, run where a user runs it
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"search_summary.md", "search.csv", "search_anytime.png"} <= {p.name for p in (tmp_path / "results" / "bench_search").iterdir()}
    assert {p.name: p.read_bytes() for p in (BENCH / "measured").iterdir()} == measured
