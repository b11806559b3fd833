"""A real multi-node sweep on this machine: a head and a worker as separate `ray start` processes.

The quick grid (shortened) runs with `--address`; trials land on both nodes, and the worker is crashed
mid-sweep (SIGKILL to its processes): the sweep finishes, the lost trials continue from their checkpoints
on the head, and every trial has every step. Both tests read the one sweep (a second sweep would double
the suite's slowest part). Both nodes share one tmp folder as --storage, as a real cluster shares a
bucket: Ray >= 2.7 does not copy trial folders between nodes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from ray_nodes import start_cluster
from tune_adder.results import load_records
from tune_adder.storage import Storage
from tune_adder.testhooks import BLOCK_AT, NO_PROBES

pytestmark = pytest.mark.ray  # starts its own Ray nodes

REPO = Path(__file__).resolve().parents[1]
NAME, MAX_STEPS, EVAL_EVERY = "lost-node", 30, 5
BLOCK_STEP = 2 * EVAL_EVERY  # trials wait here (tune_adder.testhooks) until the worker has been crashed
# The quick grid's 8 configs, few steps, a checkpoint at every evaluation, retries for the lost trials; no
# length-generalisation probes (seconds per trial; tests/test_sweep.py checks them).
SWEEP = ["--grid", "quick", "--max-steps", str(MAX_STEPS), "--eval-every", str(EVAL_EVERY), "--eval-size", "200",
         "--checkpoint-every", "1", "--max-failures", "3", "--status-every", "5", "--name", NAME]


def _blocked_on(folder: Path, gate: Path, node_id: str) -> str | None:
    """A trial on `node_id` blocked by the test hook right after its (checkpointed) report at BLOCK_STEP."""
    pids = {int(m.read_text()) for m in gate.glob("*.blocked")}
    for result in folder.glob("*/result.json"):
        last = result.read_text().rstrip().rsplit("\n", 1)[-1]
        report = json.loads(last) if last.endswith("}") else {}
        if report.get("node_id") == node_id and report.get("pid") in pids and report["step"] == BLOCK_STEP:
            return result.parent.name
    return None


@pytest.fixture(scope="module")
def lost_node_sweep():
    """Run the sweep on head + worker, crash the worker once one of its trials is mid-run, wait for the end."""
    tmp = Path(tempfile.mkdtemp(prefix="ta-mn-"))  # short: Ray's socket paths live under it
    address, nodes = start_cluster(tmp, {"head": 2, "worker": 2})
    head, worker = nodes
    names = {head.node_id(): "head", worker.node_id(): "worker"}
    cmd = [sys.executable, "-m", "tune_adder.sweep", *SWEEP, "--address", address, "--storage", str(tmp / "storage")]
    gate = tmp / "gate"
    gate.mkdir()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled", BLOCK_AT: f"{BLOCK_STEP}:{gate}", NO_PROBES: "1"})
    try:
        # An event, not a race: trials stop at BLOCK_STEP until released, so one on the worker is waited for.
        deadline = time.monotonic() + 600
        while (victim := _blocked_on(tmp / "storage" / NAME, gate, worker.node_id())) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no trial was blocked on the worker:\n{proc.communicate()[0][-3000:]}")
            time.sleep(0.2)
        worker.kill()  # SIGKILL its `ray start`, raylet, agents and trial processes, all at once
        (gate / "release").touch()
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-4000:]
        records = load_records(Storage.from_arg(str(tmp / "storage")), NAME)  # every report, repeats included
        yield {"folder": tmp / "storage" / NAME, "names": names, "victim": victim, "out": out,
               "reports": {r.trial_id: r.reports for r in records}}
    finally:
        (gate / "release").touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_sweep_spreads_trials_over_nodes(lost_node_sweep):
    names, reports = lost_node_sweep["names"], lost_node_sweep["reports"]
    used = {names[r["node_id"]] for trial in reports.values() for r in trial}
    assert used == {"head", "worker"}


def test_sweep_survives_losing_a_worker_node(lost_node_sweep):
    folder, names = lost_node_sweep["folder"], lost_node_sweep["names"]
    # Nothing lost: all 8 trials finished, each with every evaluation step in the frames.
    assert json.loads((folder / "experiment.json").read_text())["status"] == "completed"
    trials = pd.read_parquet(folder / "trials.parquet")
    history = pd.read_parquet(folder / "history.parquet")
    assert len(trials) == 8 and set(trials["status"]) == {"TERMINATED"} and set(trials["stop_reason"]) == {"completed"}
    assert (trials["steps_trained"] == MAX_STEPS).all()
    for trial_id, steps in history.groupby("trial_id")["step"]:
        assert sorted(steps) == list(range(EVAL_EVERY, MAX_STEPS + 1, EVAL_EVERY)), trial_id
    # The trial caught on the worker finished on the head, continuing from its checkpoint at BLOCK_STEP
    # (where the worker was lost), not from scratch: the head's first report is the next evaluation.
    victim = next(t for t in lost_node_sweep["reports"] if t in lost_node_sweep["victim"])
    steps = [(names[r["node_id"]], r["step"]) for r in lost_node_sweep["reports"][victim]]
    on_worker = [s for n, s in steps if n == "worker"]
    on_head = [s for n, s in steps if n == "head"]
    assert on_worker and on_head and steps[-1] == ("head", MAX_STEPS), steps
    assert max(on_worker) == BLOCK_STEP and on_head[0] == BLOCK_STEP + EVAL_EVERY, (steps, lost_node_sweep["out"][-2000:])
