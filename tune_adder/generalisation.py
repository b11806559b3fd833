"""How far a trained adder generalises, from its probe exact matches (pure: no torch, used by the trainer and the analysis).

A rung of metrics.PROBE_LADDER passes when its exact matches are >= PASS_EXACT_MATCH; the reach is the
last rung of the unbroken run of passes from the bottom of the ladder, or the trained length if the first fails.
"""

from __future__ import annotations

import math
from typing import Mapping

from tune_adder import metrics

PASS_EXACT_MATCH = 0.99


def passes(value) -> bool:
    """An exact match that passes a rung; a missing or NaN one (not probed) does not."""
    try:
        return value is not None and not math.isnan(float(value)) and float(value) >= PASS_EXACT_MATCH
    except (TypeError, ValueError):  # pandas' NA and other non-numbers: not probed
        return False


def reach(probes: Mapping, trained_digits: int, kinds: tuple[str, ...] = metrics.PROBE_KINDS) -> int:
    """The longest rung up to which every rung passes on every one of `kinds`; the trained length if none."""
    result = int(trained_digits)
    for length in metrics.PROBE_LADDER:
        if not all(passes(probes.get(metrics.probe_column(kind, length))) for kind in kinds):
            break
        result = max(result, length)
    return result


def summary(probes: Mapping, trained_digits: int) -> dict:
    """The probe columns of a trial row: every exact match, generalises_to (both kinds) and generalises_beyond_trained."""
    both = reach(probes, trained_digits)
    return {**probes, metrics.GENERALISES_TO: both, metrics.GENERALISES_BEYOND: both > trained_digits}
