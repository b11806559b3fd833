"""Length-generalisation probes: how far past its trained length a trained adder still adds exactly.

At the end of a trial the model is scored on uniform random sums and on carry-chain sums (a + b ==
base**L, a carry running the whole length) at each length of PROBE_LADDER. Random sums rarely carry
far, so they alone overstate generalisation; the carry chains are the hard test. `generalises_to` is
the longest rung up to which every rung passes (tune_adder/generalisation.py, which has no torch).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from tune_adder import metrics
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
    """Exact match of every probe set; `score(batch)` returns a model's exact match on a batch."""
    out = {}
    for (kind, length), batch in probe_sets(base).items():
        out[metrics.probe_column(kind, length)] = score(AdderBatch(*(t.to(device) for t in batch)))
    return out

