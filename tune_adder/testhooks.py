"""Test hooks: environment variables that make a real trial fail on purpose, for the end-to-end tests.

Unset (always, outside the tests) they do nothing. The sweep forwards every `TUNE_ADDER_TEST_*`
variable to its trials through Ray's runtime environment, so they reach workers on any node.

- `TUNE_ADDER_TEST_FAIL_AT=STEP[:KEY=VALUE]`: the trial raises right after reporting an evaluation
  at or past STEP (after that report's checkpoint, if any), on every attempt; with `KEY=VALUE` only
  trials whose config has that value (compared as text, e.g. `lr=0.03`) fail.
- `TUNE_ADDER_TEST_BLOCK_AT=STEP:FOLDER`: right after reporting step STEP (its checkpoint is in storage;
  the driver records the report in the trial's result.json soon after), the trial's process writes
  `FOLDER/<pid>.blocked` and waits until `FOLDER/release` exists: a test can act on a trial caught at a
  known step (kill that pid) instead of polling and racing it.
"""

from __future__ import annotations

import os
import time
from typing import Any

PREFIX = "TUNE_ADDER_TEST_"
FAIL_AT = PREFIX + "FAIL_AT"
BLOCK_AT = PREFIX + "BLOCK_AT"


class InjectedFailure(RuntimeError):
    """Raised by the FAIL_AT hook: a deliberate trial failure."""


def forwarded_env() -> dict[str, str]:
    """The hook variables set in this process, to hand to Ray's workers."""
    return {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}


def after_report(config: dict[str, Any], step: int) -> None:
    """Called by the trainable after each evaluation's report; blocks or raises if BLOCK_AT or FAIL_AT say so."""
    _block(step)
    _fail(config, step)


def _block(step: int) -> None:
    spec = os.environ.get(BLOCK_AT)
    if not spec:
        return
    at, _, folder = spec.partition(":")
    if step != int(at):
        return
    marker = os.path.join(folder, f"{os.getpid()}.blocked")
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(marker + ".tmp", marker)  # the test sees the whole file or none
    while not os.path.exists(os.path.join(folder, "release")):
        time.sleep(0.05)


def _fail(config: dict[str, Any], step: int) -> None:
    spec = os.environ.get(FAIL_AT)
    if not spec:
        return
    at, _, match = spec.partition(":")
    if match:
        key, _, value = match.partition("=")
        if str(config.get(key)) != value:
            return
    if step >= int(at):
        raise InjectedFailure(f"{FAIL_AT}={spec}: failing at step {step} as asked")
