"""Test hooks: environment variables that make a real trial fail, block or diverge on purpose, for the end-to-end tests.

Unset (always, outside the tests) they do nothing; an empty value or `0` counts as unset. The sweep forwards
every `TUNE_ADDER_TEST_*` variable to its trials through Ray's runtime environment, so they reach workers on
any node, and says on standard error at its start which ones are set, so a stray export is not silent.

- `TUNE_ADDER_TEST_FAIL_AT=STEP[:KEY=VALUE]`: the trial raises right after reporting an evaluation
  at or past STEP (after that report's checkpoint, if any), on every attempt; with `KEY=VALUE` only
  trials whose config has that value (compared as text, e.g. `lr=0.03`) fail.
- `TUNE_ADDER_TEST_BLOCK_AT=STEP:FOLDER`: right after reporting step STEP (its checkpoint is in storage;
  the driver records the report in the trial's result.json soon after), the trial's process writes
  `FOLDER/<pid>.blocked` and waits until `FOLDER/release` (every trial, for good) or `FOLDER/<pid>.release`
  (this one; both files are then removed, so the next trial in a reused process blocks again) exists: a test
  can act on a trial caught at a known step (kill that pid) instead of polling and racing it. After
  BLOCK_LIMIT_S without a release the trial fails (a test that died without releasing it leaves no trial
  waiting for ever).
- `TUNE_ADDER_TEST_DIVERGE_AT=STEP[:KEY=VALUE]`: right after reporting step STEP, the trial's weights are
  set to NaN (trials without --pack), so its next training loss is non-finite and the trainer's own check
  ends it as `diverged`.
- `TUNE_ADDER_TEST_NO_PROBES=1`: finished trials skip the length-generalisation probes (seconds per trial,
  most of a tiny test trial's cost); their probe columns stay empty. Tests that check the probes leave it unset.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

PREFIX = "TUNE_ADDER_TEST_"
FAIL_AT = PREFIX + "FAIL_AT"
BLOCK_AT = PREFIX + "BLOCK_AT"
DIVERGE_AT = PREFIX + "DIVERGE_AT"
NO_PROBES = PREFIX + "NO_PROBES"
BLOCK_LIMIT_S = 600.0  # the longest a BLOCK_AT trial waits for its release before it fails


class InjectedFailure(RuntimeError):
    """Raised by the FAIL_AT hook: a deliberate trial failure."""


def forwarded_env() -> dict[str, str]:
    """The hook variables set in this process, to hand to Ray's workers."""
    return {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}


def _get(name: str) -> str | None:
    """The variable's value when it is set: not empty and not "0"."""
    value = os.environ.get(name, "").strip()
    return None if value in ("", "0") else value


def active() -> dict[str, str]:
    """The hook variables that are set here (a value that is neither empty nor "0")."""
    return {k: v for k in sorted(forwarded_env()) if (v := _get(k)) is not None}


def announce() -> None:
    """One line on standard error when any hook is set: a stray export would make trials fail or block."""
    hooks = active()
    if hooks:
        listed = " ".join(f"{k}={v}" for k, v in hooks.items())
        print(f"test hooks set ({listed}): trials fail, block, diverge or skip their probes on purpose; "
              f"unset them outside the tests (tune_adder/testhooks.py)", file=sys.stderr, flush=True)


def after_report(config: dict[str, Any], step: int, model: Any = None) -> None:
    """Called by the trainable after each evaluation's report; blocks, raises or poisons `model` (a torch
    module) if BLOCK_AT, FAIL_AT or DIVERGE_AT say so."""
    _block(step)
    _fail(config, step)
    if model is not None:
        _diverge(config, step, model)


def probes_wanted() -> bool:
    """False when NO_PROBES is set: a finished trial then skips its length-generalisation probes."""
    return _get(NO_PROBES) is None


def _block(step: int) -> None:
    spec = _get(BLOCK_AT)
    if spec is None:
        return
    at, _, folder = spec.partition(":")
    if step != int(at):
        return
    marker = os.path.join(folder, f"{os.getpid()}.blocked")
    own = os.path.join(folder, f"{os.getpid()}.release")
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(marker + ".tmp", marker)  # the test sees the whole file or none
    deadline = time.monotonic() + BLOCK_LIMIT_S
    while not os.path.exists(os.path.join(folder, "release")):
        if os.path.exists(own):
            os.remove(own)
            os.remove(marker)
            return
        if time.monotonic() > deadline:
            os.remove(marker)
            raise InjectedFailure(f"{BLOCK_AT}={spec}: not released within {BLOCK_LIMIT_S:g} s; failing the trial")
        time.sleep(0.05)


def _matches(config: dict[str, Any], spec: str) -> tuple[int, bool]:
    """STEP[:KEY=VALUE] -> (STEP, whether this trial's config matches KEY=VALUE, compared as text)."""
    at, _, match = spec.partition(":")
    if not match:
        return int(at), True
    key, _, value = match.partition("=")
    return int(at), str(config.get(key)) == value


def _fail(config: dict[str, Any], step: int) -> None:
    spec = _get(FAIL_AT)
    if spec is None:
        return
    at, mine = _matches(config, spec)
    if mine and step >= at:
        raise InjectedFailure(f"{FAIL_AT}={spec}: failing at step {step} as asked")


def _diverge(config: dict[str, Any], step: int, model: Any) -> None:
    spec = _get(DIVERGE_AT)
    if spec is None:
        return
    at, mine = _matches(config, spec)
    if mine and step == at:
        import torch

        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
