"""Metric and result-frame column names, defined once for the trainer, the sweep and the analysis."""

# The metric every search optimises and every "best config" is ranked by.
METRIC = "val_exact_match"
MODE = "max"
# What ASHA may decide on (--asha-metric) and which way is better. Exact match is a step function that sits
# at 0 early in training, so ASHA's first rungs tie on it; the held-out loss ranks trials from the start.
ASHA_METRICS = {"val_exact_match": "max", "val_loss": "min"}

# The training-progress axis that ASHA and the plots use.
STEP = "step"

# Exact match on the evaluation's carry-chain sums at the trained length (the analysis reads it by this name).
CARRY_CHAIN_METRIC = "carry_chain_exact_match"
# What `fit` reports at each evaluation (EvalMetrics fields, in order).
EVAL_METRICS = (
    "step",
    "samples_seen",
    "train_loss",  # mean training cross-entropy since the last evaluation
    "val_loss",
    "val_exact_match",  # share of held-out sums whose every digit is right: the seed's accuracy
    "val_digit_acc",
    CARRY_CHAIN_METRIC,  # a + b == base**digits: the carry runs the whole length
    "longer_exact_match",  # sums at twice the trained length
    "steps_per_s",
    "diverged",
)

# Flat Tune config keys that describe a trial; these are the config columns of both frames.
CONFIG_COLUMNS = (
    "digits",
    "lr",
    "layers",
    "cell",
    "hidden",
    "embed_dim",
    "batch_size",
    "base",
    "seed",
    "max_steps",
)

TRIAL_ID = "trial_id"

# Trial packs (--pack): one Ray trial trains several (lr, seed) members of one config together. Its flat
# config lists them under these keys instead of "seed" (and "lr"), and each report carries one entry per
# member under MEMBERS; the frames unpack them into one trial per member, as if each had run alone.
PACK_SEEDS = "pack_seeds"
PACK_LRS = "pack_lrs"
MEMBERS = "members"
# A replayed trial (--replay) reports the recorded run's time_total_s under this key: the frames' times are
# the recorded ones, not the seconds the replay took.
RECORDED_TIME = "recorded_time_s"

# history.parquet: one row per report of every trial, no repeated (trial_id, step).
HISTORY_COLUMNS = (TRIAL_ID, *CONFIG_COLUMNS, *EVAL_METRICS, "time_total_s")

# Length-generalisation probes at the end of a trial (tune_adder/probes.py): exact match on uniform and on
# carry-chain sums at each length of the ladder, one trials.parquet column per (kind, length).
PROBE_LADDER = (100, 1_000, 10_000)
PROBE_KINDS = ("uniform", "carry_chain")


def probe_column(kind: str, length: int) -> str:
    """e.g. probe_carry_chain_1000: exact match on 1000-digit carry-chain sums."""
    return f"probe_{kind}_{length}"


GENERALISES_TO = "generalises_to"  # longest rung up to which every probe passes; the trained length if none
GENERALISES_BEYOND = "generalises_beyond_trained"  # False when generalises_to is only the trained length
PROBE_COLUMNS = (
    *(probe_column(kind, length) for length in PROBE_LADDER for kind in PROBE_KINDS),
    GENERALISES_TO,
    GENERALISES_BEYOND,
)

# trials.parquet: one row per trial.
STOP_REASONS = (
    "completed",  # trained max_steps
    "solved",  # --stop-when-solved: val_exact_match 1.0 for SOLVED_PATIENCE evaluations in a row
    "early_stopped",  # cut short by the scheduler (ASHA)
    "diverged",  # non-finite loss
    "error",  # the trial failed
    "running",  # the sweep has not finished it (a partial frame)
)
SOLVED_PATIENCE = 3
TRIAL_COLUMNS = (
    TRIAL_ID,
    *CONFIG_COLUMNS,
    "status",  # Ray's trial status: TERMINATED, ERROR, ...
    "stop_reason",  # one of STOP_REASONS
    *(f"final_{m}" for m in EVAL_METRICS if m not in ("step", "diverged")),
    "best_val_exact_match",
    "steps_to_solve",  # first evaluated step with val_exact_match == 1.0; null if never
    "diverged",
    "steps_trained",
    "wall_time_s",
    *PROBE_COLUMNS,  # null for a trial that did not reach its end (early stopped, error, running)
)
