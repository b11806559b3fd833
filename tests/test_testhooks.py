"""The test hooks themselves (tune_adder/testhooks.py): a blocked trial gives up after its limit, a value of "0"
is unset, and a sweep says on standard error which hooks are set. Real hooks on real files, no Ray."""

from __future__ import annotations

import threading
import time

import pytest

from tune_adder import testhooks
from tune_adder.testhooks import BLOCK_AT, FAIL_AT, NO_PROBES, InjectedFailure


@pytest.fixture
def no_hooks(monkeypatch):
    """This process's environment without any TUNE_ADDER_TEST_* variable (the caller's may have some)."""
    for name in testhooks.forwarded_env():
        monkeypatch.delenv(name)
    return monkeypatch


def _report_in_thread(step: int) -> tuple[threading.Thread, dict]:
    """after_report(step) on a thread: a block that never ends shows as a thread still alive, not a hung test."""
    outcome: dict = {}

    def run():
        try:
            testhooks.after_report({"lr": 0.01}, step)
            outcome["returned"] = True
        except InjectedFailure as e:
            outcome["failed"] = str(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_blocked_trial_waits_for_its_release_and_fails_after_the_limit(no_hooks, tmp_path):
    assert testhooks.BLOCK_LIMIT_S == 600  # the limit outside this test
    no_hooks.setattr(testhooks, "BLOCK_LIMIT_S", 1.0)
    no_hooks.setenv(BLOCK_AT, f"20:{tmp_path}")
    thread, outcome = _report_in_thread(20)
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("*.blocked")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob("*.blocked")), "the trial never said it was blocked"
    thread.join(60)
    assert not thread.is_alive(), "still blocked long after BLOCK_LIMIT_S"
    assert "not released within 1 s" in outcome.get("failed", ""), outcome
    assert not list(tmp_path.glob("*.blocked"))  # it no longer claims to be held

    (tmp_path / "release").touch()  # released in time: it carries on
    thread, outcome = _report_in_thread(20)
    thread.join(60)
    assert outcome == {"returned": True}


@pytest.mark.parametrize(("value", "probed"), [(None, True), ("", True), ("0", True), ("1", False), ("yes", False)])
def test_no_probes_counts_as_set_only_when_neither_empty_nor_zero(value, probed, no_hooks):
    if value is not None:
        no_hooks.setenv(NO_PROBES, value)
    assert testhooks.probes_wanted() is probed


def test_fail_at_zero_is_unset_and_a_step_fails(no_hooks):
    no_hooks.setenv(FAIL_AT, "0")
    testhooks.after_report({"lr": 0.01}, 20)  # nothing happens
    no_hooks.setenv(FAIL_AT, "20:lr=0.01")
    with pytest.raises(InjectedFailure, match="failing at step 20"):
        testhooks.after_report({"lr": 0.01}, 20)


def test_a_sweep_start_names_the_hooks_set_in_one_line_on_stderr(no_hooks, capsys):
    testhooks.announce()
    assert capsys.readouterr() == ("", "")  # none set: nothing said
    no_hooks.setenv(NO_PROBES, "0")
    testhooks.announce()
    assert capsys.readouterr() == ("", "")  # "0" is unset
    no_hooks.setenv(FAIL_AT, "20:lr=0.03")
    no_hooks.setenv(NO_PROBES, "1")
    testhooks.announce()
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert f"{FAIL_AT}=20:lr=0.03" in err and f"{NO_PROBES}=1" in err and "unset them" in err
