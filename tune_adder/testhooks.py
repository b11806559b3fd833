"""Test hooks: environment variables that make a real trial fail on purpose, for the end-to-end tests.

Unset (always, outside the tests) they do nothing. The sweep forwards every `TUNE_ADDER_TEST_*`
variable to its trials through Ray's runtime environment, so they reach workers on any node.

- `TUNE_ADDER_TEST_FAIL_AT=STEP[:KEY=VALUE]`: the trial raises right after reporting an evaluation
  at or past STEP (after that report's checkpoint, if any), on every attempt; with `KEY=VALUE` only
  trials whose config has that value (compared as text, e.g. `lr=0.03`) fail.
"""

from __future__ import annotations

import os
from typing import Any

PREFIX = "TUNE_ADDER_TEST_"
FAIL_AT = PREFIX + "FAIL_AT"


class InjectedFailure(RuntimeError):
    """Raised by the FAIL_AT hook: a deliberate trial failure."""


def forwarded_env() -> dict[str, str]:
    """The hook variables set in this process, to hand to Ray's workers."""
    return {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}


def after_report(config: dict[str, Any], step: int) -> None:
    """Called by the trainable after each evaluation's report; raises if FAIL_AT says so."""
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
