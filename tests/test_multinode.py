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
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from ray_nodes import FAST_FAILURE_ENV, start_cluster, start_node
from tune_adder.results import load_records
from tune_adder.storage import Storage
from tune_adder.testhooks import BLOCK_AT, NO_PROBES

pytestmark = pytest.mark.ray  # starts its own Ray nodes

REPO = Path(__file__).resolve().parents[1]
NAME, MAX_STEPS, EVAL_EVERY = "lost-node", 30, 5
NODE_WAIT_ENV = "TUNE_ADDER_NODE_WAIT_S"  # README's name for it (tune_adder.runner.NODE_WAIT_ENV)
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
               "reports": {r.trial_id: r.reports for r in records}, "address": address, "tmp": tmp, "nodes": nodes}
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


def test_a_sweep_waits_for_a_node_that_can_hold_its_trial_and_runs_there(lost_node_sweep, tmp_path):
    """README, cluster step 6: on a cluster too small for one trial, the sweep asks the autoscaler for a node and
    waits up to TUNE_ADDER_NODE_WAIT_S. Here the cluster is the head's 2 CPUs (its worker was crashed above) and the
    trial wants 3. With a 1 s wait and no node: the wait is announced, then exit 2 with one line naming the flag.
    With a long wait, the test plays the autoscaler: once the sweep says it waits, a 4-CPU node joins, and the
    trial runs on that node."""
    address, tmp = lost_node_sweep["address"], lost_node_sweep["tmp"]
    configs = tmp_path / "one.csv"
    configs.write_text("digits,lr,layers,cell\n3,0.03,1,RNN\n")
    cmd = [sys.executable, "-m", "tune_adder.sweep", "--configs", str(configs), "--max-steps", "10", "--eval-every", "5",
           "--eval-size", "50", "--cpus-per-trial", "3", "--address", address, "--storage", str(tmp_path / "storage")]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", NO_PROBES: "1"}

    short = subprocess.run([*cmd, "--name", "no-node"], cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**env, NODE_WAIT_ENV: "1"})  # fmt: skip
    assert short.returncode == 2, short.stdout[-2000:] + short.stderr[-2000:]
    assert "waiting up to 1 s for the autoscaler" in short.stdout, short.stdout[-2000:]
    (line,) = short.stderr.strip().splitlines()[-1:]
    assert "--cpus-per-trial 3" in line and "2 CPU" in line and "Traceback" not in short.stderr, short.stderr[-2000:]

    proc = subprocess.Popen([*cmd, "--name", "late-node"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**env, NODE_WAIT_ENV: "300"})  # fmt: skip
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    said, deadline = [], time.monotonic() + 300
    try:
        while not any("waiting up to 300 s" in x for x in said):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(said)[-3000:]
            try:
                said.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        node = start_node("late", [f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=4", "--num-gpus=0",
                                   f"--resources={json.dumps({'late': 1})}"], tmp, {"RAY_AUTH_MODE": "disabled", **FAST_FAILURE_ENV})
        lost_node_sweep["nodes"].append(node)  # stopped with the cluster
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.5)  # the reader thread drains what is left
    while not lines.empty():
        said.append(lines.get())
    assert proc.returncode == 0, "".join(said)[-3000:]
    (trial,) = (tmp_path / "storage" / "late-node").glob("train_*/result.json")
    reports = [json.loads(x) for x in trial.read_text().splitlines() if x.strip()]
    assert reports and {r["node_id"] for r in reports} == {node.node_id()}, reports[-1]
