"""Searches and schedulers replayed in simulated time on a recorded sweep: the core of bench_search.py.

A table is one operand length of a dataset under one recorded seed: every config's recorded evaluations.
A method (an order of configs or Optuna TPE, FIFO or Ray's ASHA, optionally stop-when-solved) runs on
`workers` parallel slots in a clock counted in training steps: a trial started at time t reports its
evaluation at step s at time t + s. The algorithms are the real ones: Ray Tune's AsyncHyperBandScheduler
object is driven through its own on_trial_add/on_trial_result/on_trial_complete, and Optuna's TPESampler is
asked and told exactly as Ray's OptunaSearch does (categorical choices over the recorded values; a trial's
last result is its value, a NaN value is not told). Nothing here starts Ray.

What is measured per run: the training steps spent (all trials, the running ones up to the moment) until
the best config found so far is as good as the table's best: a config that solves (val_exact_match 1.0)
in the fewest steps to solve of any config (known to the evaluation interval: ties count), seen when it first
reports solved.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from functools import cached_property
from types import SimpleNamespace
from typing import Any, Iterator

import optuna
import pandas as pd
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tune_adder import frames
from tune_adder.metrics import METRIC, STEP, TRIAL_ID
from tune_adder.replay import solved_prefix
from tune_adder.spaces import get_grid

FACTORS = ("lr", "layers", "cell")  # what the full grid varies at one operand length


@dataclass(frozen=True)
class Method:
    """A search (the grid's order, a random order, or Optuna TPE), a scheduler, and whether trials stop once solved."""

    name: str
    search: str = "grid"  # grid | random | tpe
    scheduler: str = "fifo"  # fifo | asha
    metric: str = "val_exact_match"  # what ASHA's rungs judge (TPE scores val_exact_match, as the sweep's Optuna does)
    grace_period: int = 100
    reduction_factor: float = 3.0
    stop_when_solved: bool = False

    @property
    def mode(self) -> str:
        return "min" if self.metric == "val_loss" else "max"


@dataclass
class Table:
    """One operand length under one recorded seed: each config's evaluations (step order) and its target."""

    digits: int
    seed: int
    eval_every: int
    max_steps: int
    configs: list[dict[str, Any]]  # in the grid's order
    curves: dict[tuple, list[dict[str, Any]]]

    @cached_property
    def best_steps(self) -> float:
        """The fewest steps to solve of any config (inf when none solves)."""
        return min((steps_to_solve(c) for c in self.curves.values()), default=math.inf)

    def is_best(self, report: dict[str, Any], key: tuple) -> bool:
        """This report is the first solved one of a config as good as the table's best."""
        best = self.best_steps
        first = steps_to_solve(self.curves[key])
        return math.isfinite(best) and report[STEP] == first == best

    def floor_steps(self, workers: int) -> float:
        """A lower bound on the steps any scheduler spends before it finds the best when trials start in the grid's
        order: every config ahead of the first best one must report once (one evaluation interval) before all but
        `workers` - 1 of them can have freed a slot for it, and the best must train to its steps to solve."""
        best = self.best_steps
        if not math.isfinite(best):
            return math.inf
        ahead = next(i for i, c in enumerate(self.configs) if steps_to_solve(self.curves[key_of(c)]) == best)
        return max(0, ahead - workers + 1) * self.eval_every + best


def key_of(config: dict[str, Any]) -> tuple:
    return tuple(config[f] for f in FACTORS)


def steps_to_solve(curve: list[dict[str, Any]]) -> float:
    """The frames' steps_to_solve, with inf for never (so it orders)."""
    solved = frames.steps_to_solve(curve)
    return math.inf if solved is None else solved


def load_tables(history: pd.DataFrame, trials: pd.DataFrame, grid: str = "full") -> list[Table]:
    """Every (digits, recorded seed) table of a full-grid dataset whose configs were all recorded under that seed."""
    eval_every = int(history.sort_values(STEP).groupby(TRIAL_ID)[STEP].diff().dropna().mode().iloc[0])
    max_steps = int(trials["max_steps"].max())
    by_trial = {tid: g.sort_values(STEP).to_dict("records") for tid, g in history.groupby(TRIAL_ID)}
    tables = []
    for digits in sorted(trials["digits"].unique()):
        configs = [c for c in get_grid(grid).configs if c["digits"] == digits]
        for seed in sorted(trials["seed"].unique()):
            rows = trials[(trials["digits"] == digits) & (trials["seed"] == seed)]
            curves = {key_of(r): by_trial.get(r[TRIAL_ID], []) for r in rows.to_dict("records")}
            if all(key_of(c) in curves for c in configs):
                tables.append(Table(int(digits), int(seed), eval_every, max_steps, configs, curves))
    return tables


@dataclass
class Outcome:
    """One simulated run: when the table's best was found, and the anytime trace."""

    found_at: float  # steps spent when the best was first seen (inf if never)
    total: int  # steps spent by the whole run
    trials: int
    trace: list[tuple[float, float]] = field(default_factory=list)  # (steps spent, best steps-to-solve seen so far)
    runs: list[tuple[tuple, int]] = field(default_factory=list)  # (config key, steps it trained), in start order


class _Searcher:
    """Hands out the next config: the grid's order, a shuffled order, or Optuna TPE over the grid's values."""

    def __init__(self, table: Table, method: Method, rng_seed: int):
        self.table, self.method = table, method
        self.queue = list(table.configs)
        if method.search == "random":
            random.Random(rng_seed).shuffle(self.queue)
        self.budget = len(table.configs)
        self.asked = 0
        if method.search == "tpe":
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self.study = optuna.create_study(
                direction="maximize",  # the sweep's OptunaSearch scores METRIC (val_exact_match), whatever ASHA judges
                sampler=optuna.samplers.TPESampler(seed=rng_seed),
            )
            self.space = {
                f: optuna.distributions.CategoricalDistribution(sorted({c[f] for c in table.configs})) for f in FACTORS
            }
            self.open: dict[int, Any] = {}

    def next(self, trial_id: int) -> dict[str, Any] | None:
        """The config of trial `trial_id`. Ray's TuneController keeps one suggested trial pending for a searcher
        other than the grid's generator, so Optuna is asked for trial k+1 as soon as trial k starts."""
        if trial_id >= self.budget:
            return None
        if self.method.search != "tpe":
            return self.queue[trial_id]
        while self.asked <= min(trial_id + 1, self.budget - 1):
            self.open[self.asked] = self.study.ask(self.space)
            self.asked += 1
        return {**self.table.configs[0], **self.open[trial_id].params}

    def complete(self, trial_id: int, last: dict[str, Any]) -> None:
        if self.method.search != "tpe":
            return
        trial, value = self.open.pop(trial_id), last.get(METRIC)
        # As Ray's OptunaSearch tells it: COMPLETE with the value (PRUNED without one). Optuna refuses a NaN value
        # with a ValueError, which Ray only logs: the trial is never told and TPE leaves it out.
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.PRUNED
        try:
            self.study.tell(trial, value, state=state)
        except ValueError:
            if not (isinstance(value, float) and math.isnan(value)):
                raise


def _scheduler(table: Table, method: Method):
    if method.scheduler == "fifo":
        return None
    # The sweep's own ASHA (tune_adder.runner._scheduler): same time attribute and stop_last_trials.
    return ASHAScheduler(
        time_attr=STEP, metric=method.metric, mode=method.mode, max_t=table.max_steps,
        grace_period=method.grace_period, reduction_factor=method.reduction_factor, stop_last_trials=False,
    )  # fmt: skip


def simulate(table: Table, method: Method, workers: int, rng_seed: int) -> Outcome:
    """Run `method` on `table` with `workers` slots; see the module's docstring for the clock and the measure."""
    searcher, sched = _Searcher(table, method, rng_seed), _scheduler(table, method)
    events: list[tuple[float, int, int]] = []  # (time, trial id, report index)
    started: dict[int, float] = {}
    curves: dict[int, list[dict[str, Any]]] = {}
    keys: dict[int, tuple] = {}
    done_steps = 0  # steps of trials that have ended
    next_id = 0
    outcome = Outcome(math.inf, 0, 0)
    best_seen = math.inf

    def start(now: float) -> bool:
        nonlocal next_id
        config = searcher.next(next_id)
        if config is None:
            return False
        key = key_of(config)
        curve = table.curves[key]
        curves[next_id] = solved_prefix(curve) if method.stop_when_solved else curve
        keys[next_id], started[next_id] = key, now
        outcome.runs.append((key, 0))
        if sched is not None:
            sched.on_trial_add(None, SimpleNamespace(trial_id=str(next_id)))
        if curves[next_id]:
            heapq.heappush(events, (now + curves[next_id][0][STEP], next_id, 0))
        next_id += 1
        return True

    def end(trial_id: int, report_index: int, now: float) -> None:
        nonlocal done_steps
        last = curves[trial_id][report_index]
        done_steps += last[STEP]
        outcome.runs[trial_id] = (keys[trial_id], last[STEP])
        del started[trial_id]
        searcher.complete(trial_id, last)
        start(now)

    for _ in range(workers):
        if not start(0.0):
            break
    while events:
        now, tid, i = heapq.heappop(events)
        report = curves[tid][i]
        spent = done_steps + sum(now - t0 for t0 in started.values())
        solve = steps_to_solve(table.curves[keys[tid]])
        if report[STEP] == solve and solve < best_seen:
            best_seen = solve
            outcome.trace.append((spent, best_seen))
        if math.isinf(outcome.found_at) and table.is_best(report, keys[tid]):
            outcome.found_at = spent
        last_report = i + 1 == len(curves[tid])
        action = TrialScheduler.CONTINUE
        if sched is not None:  # as Ray's TuneController: each result, then completion for a stopped or ended trial
            trial = SimpleNamespace(trial_id=str(tid))
            action = sched.on_trial_result(None, trial, _numbers(report))
            if last_report or action == TrialScheduler.STOP:
                sched.on_trial_complete(None, trial, _numbers(report))
        if last_report or action == TrialScheduler.STOP:
            end(tid, i, now)
        else:
            heapq.heappush(events, (started[tid] + curves[tid][i + 1][STEP], tid, i + 1))
    outcome.total, outcome.trials = done_steps, next_id
    return outcome


def _numbers(report: dict[str, Any]) -> dict[str, Any]:
    """A report as the scheduler reads it: NaN for a missing value (a diverged run's loss)."""
    return {k: (math.nan if v is None else v) for k, v in report.items()}


def repetitions(tables: list[Table], method: Method, reps: int, workers: int) -> Iterator[dict[str, Any]]:
    """`reps` runs of a method per operand length: rep r replays recorded seed r mod (seeds) with searcher seed r."""
    by_digits: dict[int, list[Table]] = {}
    for t in tables:
        by_digits.setdefault(t.digits, []).append(t)
    for digits, group in sorted(by_digits.items()):
        for r in range(reps):
            table = group[r % len(group)]
            out = simulate(table, method, workers, rng_seed=r)
            yield {
                "method": method.name, "digits": digits, "rep": r, "recorded_seed": table.seed,
                "best_steps": table.best_steps, "found_at": out.found_at, "total_steps": out.total,
                "trials": out.trials, "trace": out.trace,
            }  # fmt: skip
