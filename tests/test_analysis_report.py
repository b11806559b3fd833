"""report.md pieces: settings from any experiment.json, cost of a partial sweep, best configs."""

from pathlib import Path

from analysis.load import Experiment
from analysis.report import best_section, cost_section, settings_section, sweep_wall_time
from tests.analysis_frames import frames, trial


def test_wall_time_from_total_sessions_or_unknown():
    assert sweep_wall_time({"wall_time_s": 90.0}) == "1.5 min"
    interrupted = {"wall_time_s": None, "status": "interrupted", "sessions": [{"wall_time_s": 60.0}, {"wall_time_s": None}]}
    assert sweep_wall_time(interrupted) == ("at least 1.0 min: 1 of the 2 runs of the command ended without recording "
                                            "their end (killed), so their time is not in it; sweep status interrupted")
    # A sweep finished by a resume after killed runs: the record's total is only the runs that ended.
    finished = {"wall_time_s": 9895.5, "status": "completed",
                "sessions": [{"wall_time_s": 7199.4}, {"wall_time_s": None}, {"wall_time_s": None}, {"wall_time_s": 2696.1}]}
    assert sweep_wall_time(finished).startswith("at least 164.9 min: 2 of the 4 runs")
    resumed = {"wall_time_s": 120.0, "status": "completed", "sessions": [{"wall_time_s": 60.0}, {"wall_time_s": 60.0}]}
    assert sweep_wall_time(resumed) == "2.0 min over 2 runs of the command, sweep status completed"
    assert sweep_wall_time({}).startswith("unknown")


def test_settings_and_cost_of_a_partial_sweep():
    history, trials = frames([trial(solve_at=300, seed=0, stop_reason="solved", end_at=400),
                              trial(solve_at=None, seed=1, end_at=200, stop_reason="early_stopped"), trial(solve_at=None, seed=2)])
    settings = {"grid": "seed", "num_trials": 90, "search_space": {"digits": [10, 20]}, "command": "python -m tune_adder.sweep"}
    cost = cost_section(Experiment(Path("x"), history, trials, settings))
    assert "| trials | 3 of 90 planned |" in cost and "| steps trained (all trials) | 1,600 |" in cost
    assert "| stopped before max_steps | 2 |" in cost and "| stop reason: early_stopped | 1 |" in cost
    text = settings_section(settings)
    assert "| grid | `seed` |" in text and "<details>" in text and "search_space" in text
    assert "unknown" in settings_section({})


def test_best_configs_rank_by_exact_match_then_steps_to_solve():
    _, trials = frames([trial(solve_at=s, seed=i, lr=lr) for lr, s in ((0.001, 700), (0.01, 300), (0.1, None)) for i in range(3)])
    best = best_section(trials, per_length=2)
    table = best.split("<details>")[0]
    assert table.index("| 10 | 0.01 |") < table.index("| 10 | 0.001 |") and "| 10 | 0.1 |" not in table
    assert "| 10 | 0.01 | 3 | 1.0 | 300 (300-300) | 3/3 |" in table
