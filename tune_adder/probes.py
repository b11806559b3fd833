"""Length-generalisation probes: how far past its trained length a trained adder still adds exactly.

At the end of a trial the model is scored on uniform random sums and on carry-chain sums (a + b ==
base**L, a carry running the whole length) at each length of PROBE_LADDER. Random sums rarely carry
far, so they alone overstate generalisation; the carry chains are the hard test. `generalises_to` is
the longest rung up to which every rung passes (tune_adder/generalisation.py, which has no torch).

Each kind climbs the ladder only while it passes: the rungs above its first failing rung are not probed
(NaN), since the reach has already ended there. The first rung is always probed, so a trial that ran its
probes has both first-rung columns. An adder cut early (ASHA, a failed length) then pays for the 100-digit
rung only, not for the 10,000-digit sums that dominate the ladder's cost.
"""

from __future__ import annotations

from functools import lru_cache

import math

import torch

from tune_adder import generalisation, metrics
from tune_adder.data import AdderBatch, carry_chain_batch, make_batch

PROBE_SEED = 20200202  # the probe sums are the same for every trial
# Sums per set at each rung: sized so the whole ladder costs a few seconds for the largest model of
# the full grid (4-layer LSTM) on one CPU core; 10,000-digit rows are evaluated in bounded chunks.
PROBE_ROWS = {100: 256, 1_000: 64, 10_000: 16}
assert tuple(PROBE_ROWS) == metrics.PROBE_LADDER


@lru_cache(maxsize=8)
def probe_sets(base: int) -> dict[tuple[str, int], AdderBatch]:
    """The fixed probe sums on CPU, keyed by (kind, length): kind is "uniform" or "carry_chain"."""
    rng = torch.Generator().manual_seed(PROBE_SEED)
    sets = {}
    for length, rows in PROBE_ROWS.items():
        sets[("uniform", length)] = make_batch(rows, length, base=base, split="uniform", generator=rng)
        sets[("carry_chain", length)] = carry_chain_batch(rows, length, base=base, generator=rng)
    return sets


def run_probes(score, base: int, device: torch.device) -> dict[str, float]:
    """Exact match of each probe kind at each rung up to its first failing one, NaN above it (not probed);
    `score(batch)` returns a model's exact match on a batch. Keys in the order of metrics.PROBE_COLUMNS."""
    sets, found = probe_sets(base), {}
    for kind in metrics.PROBE_KINDS:
        for length in metrics.PROBE_LADDER:
            batch = sets[(kind, length)]
            found[(kind, length)] = score(AdderBatch(*(t.to(device) for t in batch)))
            if not generalisation.passes(found[(kind, length)]):
                break
    return {metrics.probe_column(kind, length): found.get((kind, length), math.nan)
            for length in metrics.PROBE_LADDER for kind in metrics.PROBE_KINDS}

