"""Verdicts on the seed report's claims C1-C6 from a sweep's result frames, with the numbers behind them.

Run `python analysis/claims.py [EXPERIMENT_DIR]` to print the table; plot_convergence.py runs it too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tune_adder.metrics import STEP, TRIAL_ID  # noqa: E402

from analysis.extract import UNFINISHED, hold_fixed, select, series_label, varied  # noqa: E402
from analysis.stats import (  # noqa: E402
    ALPHA, LOSS_AREA, MEASURES, MIN_SEEDS, STEPS_TO_SOLVE, Comparison, converges_faster, holm, regressions,
    share_interval, steps_to_solve,
)

SEED_LENGTHS = (10, 20, 50, 100)
REPORT_ACCURACY = 0.995  # the seed prints accuracy to two decimals: 1.00 means >= 0.995
SEED_GRID_HINT = "the seed grid, `--grid seed --seeds 3` (the report's one-factor studies of digits, lr, layers and cell)"
MEASURE = (f"converges faster, two measures with a verdict each: lower {STEPS_TO_SOLVE} (sustained: the first of 3 "
           "evaluations in a row at exact match 1.0; never solved ranks last) and lower mean log10 train loss over the steps "
           "both settings trained; each check is a two-sided exact permutation test of ranks, corrected within a claim by "
           f"Holm, decided at {ALPHA}")
NOT_APPLICABLE = "n/a"
VERDICTS = ("supported", "partly supported", "mixed", "refuted", "inconclusive", "undecidable", "suggested",
            "suggested against", "not testable", NOT_APPLICABLE)


@dataclass
class Outcome:
    """One check on one measure: the test's p-value and whether the data lean the claim's way."""

    p: float
    claimed_way: bool | None  # True: the data lean the claim's way; False: against it; None: a tie
    min_p: float  # the smallest p these seeds could give: above the corrected threshold, nothing can be decided
    enough_seeds: bool


@dataclass
class Check:
    """One sub-claim, e.g. 'at 20 digits lr 0.01 is faster than lr 0.001', judged on each measure it applies to."""

    outcomes: dict[str, Outcome]
    evidence: str
    settings: tuple[tuple, ...] = ()  # the (digits, lr, layers, cell) of each setting it looked at: what more seeds would run


@dataclass
class ClaimResult:
    claim: str
    statement: str
    verdicts: dict[str, str] = field(default_factory=lambda: {m: "not testable" for m in MEASURES})
    evidence: list[str] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)  # parts of the claim this sweep cannot test
    checks: list[Check] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The verdict on steps to solve (the seed's own C1/C6 measures are also filed under it)."""
        return self.verdicts[STEPS_TO_SOLVE]

    @property
    def loss_verdict(self) -> str:
        return self.verdicts[LOSS_AREA]

    @property
    def measures_disagree(self) -> bool:
        both = [v for v in self.verdicts.values() if v != NOT_APPLICABLE]
        return len(set(both)) > 1


def verdict(outcomes: list[Outcome]) -> str:
    """A claim's verdict from its checks on one measure, each p-value Holm-corrected within the claim.

    supported: every check significantly the claim's way; partly supported: some are and none against; refuted:
    some significantly against and none for; mixed: some each way; inconclusive: none decided; undecidable: none
    could be, as even the smallest p these seeds allow fails Holm's first threshold (3 vs 3 seeds: 0.1); with fewer
    than MIN_SEEDS seeds anywhere only point estimates: suggested / suggested against."""
    if not outcomes:
        return "not testable"
    if not all(o.enough_seeds for o in outcomes):
        ways = {o.claimed_way for o in outcomes}
        return "suggested" if ways == {True} else "suggested against" if False in ways else "inconclusive"
    adjusted = holm([o.p for o in outcomes])
    agree = sum(1 for o, p in zip(outcomes, adjusted) if p < ALPHA and o.claimed_way is True)
    disagree = sum(1 for o, p in zip(outcomes, adjusted) if p < ALPHA and o.claimed_way is False)
    if agree and disagree:
        return "mixed"
    if agree:
        return "supported" if agree == len(outcomes) else "partly supported"
    if disagree:
        return "refuted"
    if min(o.min_p for o in outcomes) * len(outcomes) >= ALPHA:
        return "undecidable"
    return "inconclusive"


def _fmt(value: float, measure: str) -> str:
    if measure == STEPS_TO_SOLVE:
        return f"{value:.0f}" if np.isfinite(value) else "never"
    return f"{value:.2f}" if np.isfinite(value) else "diverged"


def _fmt_steps(value: float, max_steps: float) -> str:
    return f">{max_steps:.0f}" if value > max_steps else f"{value:.0f}"


def _setting(trials: pd.DataFrame, **values) -> pd.DataFrame:
    """Trials at `values`, every other varied config column held at the seed default (or commonest value)."""
    held = hold_fixed(trials, tuple(values))
    return select(trials, {**held.fixed, **values})


def _describe(c: Comparison, label_a: str, label_b: str, max_steps: float) -> str:
    """'a: median 200 (range 150-250) vs b: 500 (450-550); difference -300 [bootstrap 95% -350, -250]; p=0.002'."""
    show = (lambda v: _fmt_steps(v, max_steps)) if c.measure == STEPS_TO_SOLVE else (lambda v: _fmt(v, c.measure))
    diff, low, high = c.difference
    dshow = (lambda v: f"{v:+.0f}") if c.measure == STEPS_TO_SOLVE else (lambda v: f"{v:+.2f}")
    return (f"{c.measure}: {label_a} {show(c.a[0])} (range {show(c.a[1])}-{show(c.a[2])}) vs {label_b} {show(c.b[0])} "
            f"(range {show(c.b[1])}-{show(c.b[2])}), median difference {dshow(diff)} [bootstrap 95% {dshow(low)}, {dshow(high)}], "
            f"p={c.p:.3g} (smallest possible {c.min_p:.2g})")


def faster(history: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame, label_a: str, label_b: str) -> Check:
    """The claim says `a` converges faster than `b`: both measures, each a test of its own."""
    results = converges_faster(history, a, b)
    max_steps = float(pd.concat([a, b])["max_steps"].max())
    outcomes = {m: Outcome(c.p, {"a": True, "b": False, None: None}[c.lower], c.min_p, c.enough_seeds) for m, c in results.items()}
    evidence = f"{label_a} vs {label_b} (n={len(a)}/{len(b)}): " + "; ".join(_describe(c, label_a, label_b, max_steps) for c in results.values())
    lost_a, lost_b = len(regressions(history, a)), len(regressions(history, b))
    if lost_a or lost_b:
        evidence += f"; regressions (solved, then lost by the end): {label_a} {lost_a}/{len(a)}, {label_b} {lost_b}/{len(b)}"
    return Check(outcomes, evidence, (setting_key(a), setting_key(b)))


SETTING_KEY = ("digits", "lr", "layers", "cell")


def setting_key(trials: pd.DataFrame) -> tuple:
    """(digits, lr, layers, cell) of a group of trials of one setting (the first row's)."""
    return tuple(trials.iloc[0][list(SETTING_KEY)]) if len(trials) else ()


def share_check(hits: int, n: int, label: str, settings: tuple[tuple, ...] = ()) -> Check:
    """A claim that a typical run gets there: the share of seeds that do, tested against one half (exact binomial)."""
    share, low, high = share_interval(hits, n)
    p = float(sps.binomtest(hits, n, 0.5).pvalue) if n else 1.0
    outcome = Outcome(p, None if hits * 2 == n else hits * 2 > n, min(1.0, 2 * 0.5**n) if n else 1.0, n >= MIN_SEEDS)
    return Check({STEPS_TO_SOLVE: outcome}, f"{label}: {hits}/{n} seeds ({share:.0%}, exact 95% {low:.0%}-{high:.0%}; "
                                            f"binomial test against one half p={p:.3g})", settings)


def _present(trials: pd.DataFrame, column: str, wanted) -> tuple[list, list]:
    have = varied(trials, column)
    found = [w for w in wanted if any(w == h or (isinstance(h, float) and np.isclose(h, w)) for h in have)]
    return found, [w for w in wanted if w not in found]


def _finish(result: ClaimResult, checks: list[Check]) -> ClaimResult:
    result.checks = checks
    for measure in MEASURES:
        outcomes = [c.outcomes[measure] for c in checks if measure in c.outcomes]
        result.verdicts[measure] = verdict(outcomes) if outcomes or not checks else NOT_APPLICABLE
    result.evidence += [c.evidence for c in checks]
    if result.measures_disagree:
        result.evidence.append(f"the two measures disagree: {STEPS_TO_SOLVE} says {result.verdict}, "
                               f"{LOSS_AREA} says {result.loss_verdict}")
    if result.verdict == "not testable" and not any("--grid seed" in u for u in result.untested):
        result.untested.append(f"testable with {SEED_GRID_HINT}")
    outcomes = [o for c in checks for o in c.outcomes.values()]
    if any(not o.enough_seeds for o in outcomes):
        result.untested.append(f"fewer than {MIN_SEEDS} seeds per setting: rerun with `--seeds {MIN_SEEDS}` or more to test it")
    elif "undecidable" in result.verdicts.values():
        least = min(o.min_p for o in outcomes)
        result.untested.append(f"undecidable with these seeds: the smallest p-value they allow ({least:.2g}) times "
                               f"{len(checks)} checks is not below {ALPHA}; more seeds (`--first-seed`) would decide it")
    return result


def _exact_match_by(history: pd.DataFrame, trial: pd.Series, step: int) -> float:
    """val_exact_match at the last evaluation at or before `step`, as measured (a solved run that relapsed counts low)."""
    curve = history[(history[TRIAL_ID] == trial[TRIAL_ID]) & (history[STEP] <= step)].sort_values(STEP)
    return float(curve["val_exact_match"].iloc[-1]) if len(curve) else float("nan")


def check_c1(history: pd.DataFrame, trials: pd.DataFrame) -> ClaimResult:
    result = ClaimResult("C1", "10/20/50/100 digits: 1000 steps at lr 0.001 (RNN, 2 layers) reach test accuracy 1.00")
    lengths, missing = _present(trials, "digits", SEED_LENGTHS)
    result.untested += [f"{d} digits not in the sweep" for d in missing]
    checks = []
    for digits in lengths:
        group = _setting(trials, digits=digits, cell="RNN", layers=2, lr=0.001)
        if group.empty:
            result.untested.append(f"{digits} digits: no RNN/2 layers/lr 0.001 trial")
            continue
        if group["max_steps"].max() < 1000 and not np.isfinite(steps_to_solve(group, history)).all():
            result.untested.append(f"{digits} digits: max_steps {group['max_steps'].max()} < 1000 and not all seeds solved")
            continue
        scores = np.array([_exact_match_by(history, t, 1000) for _, t in group.iterrows()])
        reached = int((scores >= REPORT_ACCURACY).sum())
        check = share_check(reached, len(scores), f"{digits} digits: exact match 1.00 at step 1000", (setting_key(group),))
        check.evidence += f"; exact match at step 1000 mean {np.nanmean(scores):.3f} (min {np.nanmin(scores):.3f}, max {np.nanmax(scores):.3f})"
        checks.append(check)
    return _finish(result, checks)


def _where(**held) -> str:
    """'RNN, 2 layers, lr 0.001': the settings a claim holds fixed, as the seed states them."""
    parts = [str(held["cell"])] if "cell" in held else []
    parts += [series_label("layers", held["layers"])] if "layers" in held else []
    parts += [series_label("lr", held["lr"])] if "lr" in held else []
    parts += [f"{'/'.join(map(str, held['lengths']))} digits"] if "lengths" in held else []
    return ", ".join(parts)


def _claim_id(claim: str, default: dict, held: dict) -> str:
    """'C2' at the seed's own settings; 'C2 [LSTM, lr 0.01]' where a crossed grid re-checks it elsewhere."""
    changed = {k: v for k, v in held.items() if default.get(k) != v}
    return claim if not changed else f"{claim} [{_where(**held)}]"


def check_c2(history: pd.DataFrame, trials: pd.DataFrame, cell: str = "RNN", layers: int = 2, lr: float = 0.001) -> ClaimResult:
    held = dict(cell=cell, layers=layers, lr=lr)
    claim = _claim_id("C2", dict(cell="RNN", layers=2, lr=0.001), held)
    result = ClaimResult(claim, f"the longer the numbers, the slower the loss converges ({_where(**held)})")
    lengths = [d for d in varied(trials, "digits") if not _setting(trials, digits=d, **held).empty]
    if len(lengths) < 2:
        result.untested.append(f"needs two or more digit lengths at {_where(**held)}: {SEED_GRID_HINT}")
        return result
    checks = [faster(history, _setting(trials, digits=short, **held), _setting(trials, digits=long, **held),
                     f"{short} digits", f"{long} digits")
              for short, long in zip(lengths, lengths[1:])]
    return _finish(result, checks)


def check_c3(history: pd.DataFrame, trials: pd.DataFrame, cell: str = "RNN", layers: int = 2,
             lengths: tuple[int, ...] = (10, 20, 50)) -> ClaimResult:
    claim = _claim_id("C3", dict(cell="RNN", layers=2, lengths=(10, 20, 50)), dict(cell=cell, layers=layers, lengths=tuple(lengths)))
    shown = ", ".join(map(str, lengths))
    result = ClaimResult(claim, f"lr 0.01 and 0.1 converge clearly faster than 0.001 at {shown} digits ({_where(cell=cell, layers=layers)})")
    lengths, missing = _present(trials, "digits", lengths)
    lrs, missing_lr = _present(trials, "lr", (0.01, 0.1))
    result.untested += [f"{d} digits not in the sweep" for d in missing] + [f"lr {lr} not in the sweep" for lr in missing_lr]
    if not _present(trials, "lr", (0.001,))[0] or not lrs:
        result.untested.append(f"needs lr 0.001 and 0.01 or 0.1: {SEED_GRID_HINT}")
        return result
    checks = []
    for digits in lengths:
        slow = _setting(trials, digits=digits, cell=cell, layers=layers, lr=0.001)
        for lr in lrs:
            fast = _setting(trials, digits=digits, cell=cell, layers=layers, lr=lr)
            if len(slow) and len(fast):
                checks.append(faster(history, fast, slow, f"{digits} digits lr {lr:g}", "lr 0.001"))
    return _finish(result, checks)


def check_c4(history: pd.DataFrame, trials: pd.DataFrame, cell: str = "RNN", lr: float = 0.001) -> ClaimResult:
    claim = _claim_id("C4", dict(cell="RNN", lr=0.001), dict(cell=cell, lr=lr))
    result = ClaimResult(claim, f"10/20 digits: more layers converge faster; 50/100 digits: 2 layers fastest ({_where(cell=cell, lr=lr)})")
    depths = varied(trials, "layers")
    if len(depths) < 2:
        result.untested.append(f"the sweep has one depth ({depths}): needs two or more, {SEED_GRID_HINT}")
        return result
    lengths, missing = _present(trials, "digits", SEED_LENGTHS)
    result.untested += [f"{d} digits not in the sweep" for d in missing]
    checks = []
    for digits in lengths:
        at = {n: _setting(trials, digits=digits, cell=cell, lr=lr, layers=n) for n in depths}
        if digits in (10, 20):
            pairs = [(deep, shallow) for shallow, deep in zip(depths, depths[1:])]
        elif 2 in depths:
            pairs = [(2, n) for n in depths if n != 2]
        else:
            result.untested.append(f"{digits} digits: 2 layers not in the sweep")
            continue
        checks += [faster(history, at[a], at[b], f"{digits} digits {series_label('layers', a)}", series_label("layers", b))
                   for a, b in pairs if len(at[a]) and len(at[b])]
    return _finish(result, checks)


def _gap_trend(history: pd.DataFrame, trials: pd.DataFrame, lengths: list, one: str, other: str) -> str:
    gaps = []
    for digits in lengths:
        a, b = (_setting(trials, digits=digits, layers=2, lr=0.001, cell=c) for c in (one, other))
        if len(a) and len(b):
            ma, mb = np.median(steps_to_solve(a, history)), np.median(steps_to_solve(b, history))
            gaps.append((digits, abs(ma - mb) if np.isfinite(ma) and np.isfinite(mb) else np.inf))
    shown = ", ".join(f"{d} digits {_fmt(g, STEPS_TO_SOLVE) if np.isfinite(g) else 'n/a (unsolved)'}" for d, g in gaps)
    return f"{one}-{other} gap in median sustained steps to solve: {shown or 'n/a'} (point estimates, not part of the verdict)"


def check_c5(history: pd.DataFrame, trials: pd.DataFrame) -> ClaimResult:
    result = ClaimResult("C5", "speed RNN > LSTM > GRU at 10 digits, RNN > GRU > LSTM at 20/50/100 (2 layers, lr 0.001)")
    _, missing_cells = _present(trials, "cell", ("RNN", "LSTM", "GRU"))
    if missing_cells:
        result.untested.append(f"cells {missing_cells} not in the sweep: {SEED_GRID_HINT}")
        return result
    lengths, missing = _present(trials, "digits", SEED_LENGTHS)
    result.untested += [f"{d} digits not in the sweep" for d in missing]
    result.untested.append("the gap trends (LSTM-GRU widens, RNN-GRU narrows) are reported as point estimates only")
    checks = []
    for digits in lengths:
        order = ("RNN", "LSTM", "GRU") if digits == 10 else ("RNN", "GRU", "LSTM")
        at = {c: _setting(trials, digits=digits, layers=2, lr=0.001, cell=c) for c in order}
        checks += [faster(history, at[a], at[b], f"{digits} digits {a}", b)
                   for a, b in zip(order, order[1:]) if len(at[a]) and len(at[b])]
    result = _finish(result, checks)
    result.evidence += [_gap_trend(history, trials, lengths, "LSTM", "GRU"), _gap_trend(history, trials, lengths, "RNN", "GRU")]
    return result


def check_c6(history: pd.DataFrame, trials: pd.DataFrame, cell: str = "RNN", layers: int = 2, lr: float = 0.01) -> ClaimResult:
    held = dict(cell=cell, layers=layers, lr=lr)
    claim = _claim_id("C6", dict(cell="RNN", layers=2, lr=0.01), held)
    result = ClaimResult(claim, f"{_where(**held)} trains well (a typical seed solves within max_steps) at every length")
    checks = []
    for digits in varied(trials, "digits"):
        group = _setting(trials, digits=digits, **held)
        if group.empty:
            result.untested.append(f"{digits} digits: no {_where(**held)} trial")
            continue
        solve = steps_to_solve(group, history)
        solved = int(np.isfinite(solve).sum())
        lost = len(regressions(history, group))
        check = share_check(solved, len(solve), f"{digits} digits: solved (3 evaluations in a row) within max_steps "
                                                 f"{int(group['max_steps'].max())}", (setting_key(group),))
        check.evidence += f", median steps to solve {_fmt(float(np.median(solve)), STEPS_TO_SOLVE)}"
        check.evidence += f"; {lost} solved then lost by the end" if lost else ""
        checks.append(check)
    return _finish(result, checks)


CHECKS = (check_c1, check_c2, check_c3, check_c4, check_c5, check_c6)




def check_claims(history: pd.DataFrame, trials: pd.DataFrame) -> list[ClaimResult]:
    finished = trials[~trials["stop_reason"].isin(UNFINISHED)]
    results = [check(history, finished) for check in CHECKS]
    if len(finished) < len(trials):
        for result in results:
            result.untested.append(f"{len(trials) - len(finished)} unfinished trials (running or error) left out")
    return results


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per claim: what the table in report.md and FINDINGS.md shows."""
    return pd.DataFrame([dict(claim=r.claim, statement=r.statement, verdict=r.verdict, loss_verdict=r.loss_verdict,
                              measures_disagree=r.measures_disagree, evidence="; ".join(r.evidence),
                              untested="; ".join(r.untested)) for r in results])


def main(argv: list[str] | None = None) -> int:
    from analysis.load import InputError, latest_experiment, load_study

    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="*", type=Path, help="an experiment folder (default: the most recent one under "
                        "results/), or several read as one study")
    args = parser.parse_args(argv)
    try:
        experiment = load_study(args.experiment or [latest_experiment()])
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"experiment: {experiment.path}\n{MEASURE}")
    for r in check_claims(experiment.history, experiment.trials):
        print(f"\n{r.claim} [steps: {r.verdict}; loss: {r.loss_verdict}] {r.statement}")
        for line in r.evidence + [f"untested: {u}" for u in r.untested]:
            print(f"  - {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
