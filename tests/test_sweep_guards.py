"""The sweep's guards, on real processes: a SIGTERM to the whole process group of a sweep on its embedded Ray, an
--address where something other than Ray answers, the Ray token file's mode from its first moment, and the bound
on the trials one sweep may ask for. Trials are tiny and skip their probes (tests/test_sweep.py's conventions).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_ports, gcs_answer, listeners
from tests.test_sweep import TINY, assert_full_histories, blocked_trials, frames, hook_env, wait_for
from tune_adder import spaces
from tune_adder.settings import UsageError
from tune_adder.sweep import parse_settings
from tune_adder.testhooks import BLOCK_AT

MAX_TRIALS = 10_000  # per sweep, as the README says


def processes() -> dict[int, tuple[str, int, int, int]]:
    """{pid: (name, parent pid, session id, start time)} of every living process, from /proc (zombies left out)."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # ended meanwhile
                continue
            fields = line.rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ... starttime (the 20th)
            if fields[0] != "Z":
                procs[int(entry)] = (line[line.index("(") + 1 : line.rindex(")")], int(fields[1]), int(fields[3]), int(fields[19]))
    return procs


def process_tree(root_pid: int) -> dict[int, tuple[str, int, int]]:
    """{pid: (name, session id, start time)} of every living descendant of `root_pid` (not itself)."""
    procs = processes()
    tree, grown = {root_pid}, True
    while grown:
        new = {pid for pid, (_, ppid, _, _) in procs.items() if ppid in tree} - tree
        tree, grown = tree | new, bool(new)
    return {pid: (procs[pid][0], procs[pid][2], procs[pid][3]) for pid in tree - {root_pid}}


def still_running(started: dict[int, tuple[str, int, int]]) -> list[str]:
    """Those of `started` that still run (same pid and start time), and any process in one of their sessions."""
    sessions = {sid for _, sid, _ in started.values()}
    return sorted(f"{pid} {name}" for pid, (name, _, sid, start) in processes().items()
                  if (pid in started and started[pid][2] == start) or sid in sessions)  # fmt: skip


@pytest.mark.ray
def test_a_process_group_sigterm_stops_an_embedded_ray_sweep_as_ctrl_c_does_and_a_rerun_finishes_it(tmp_path):
    """`timeout`, `kill -TERM -PGID` and a shell's job control signal the sweep's whole process group. Its embedded Ray must
    not die under the driver: the driver stops Tune as Ctrl-C does (exit 130, experiment.json `interrupted`, frames
    written), shuts its Ray down, and leaves none of the processes it started. The same command then resumes the
    sweep to its end. Both trials the 2-CPU Ray runs are held at step 20 (test hook) when the signal comes."""
    storage, gate = tmp_path / "results", tmp_path / "gate"
    gate.mkdir()
    args = ["--grid", "quick", "--max-steps", "40", "--eval-every", "20", "--checkpoint-every", "1", "--name", "grouped"]
    cmd = [sys.executable, "-m", "tune_adder.sweep", *TINY, *args, "--storage", str(storage)]
    out_file, err_file = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out_file, "w") as stdout, open(err_file, "w") as stderr:
        proc = subprocess.Popen(cmd, env=hook_env({BLOCK_AT: f"20:{gate}"}, probes=False), cwd=REPO, stdout=stdout,
                                stderr=stderr, start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: proc.poll() is not None or len(blocked_trials(storage, gate, 20)) == 2, 600, "two trials held at step 20")
        assert proc.poll() is None, (out_file.read_text()[-2000:], err_file.read_text()[-2000:])
        started = process_tree(proc.pid)  # the embedded Ray's processes and the trials' workers
        names = {name for name, _, _ in started.values()}
        assert {"gcs_server", "raylet"} <= names, names
        signalled = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)  # the session leader's group: the sweep and whatever shares it
        proc.wait(timeout=300)
        took = time.monotonic() - signalled
    finally:
        (gate / "release").touch()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out, err = out_file.read_text(), err_file.read_text()
    assert proc.returncode == 130, (proc.returncode, out[-2000:], err[-3000:])
    assert took < 60, took  # before: a 60 s stall on the dead GCS, then exit 1
    assert "Traceback" not in err and "rerun the same command" in out, (out[-2000:], err[-3000:])
    exp = storage / "grouped"
    assert json.loads((exp / "experiment.json").read_text())["status"] == "interrupted"
    history, trials = frames(exp)
    assert len(history) >= 2 and "running" in set(trials["stop_reason"])
    # Nothing the sweep started runs on: its Ray's processes and the trials' workers, by pid and by session.
    deadline = time.monotonic() + 30  # ray.shutdown has ended them; the workers follow their raylet within seconds
    while still_running(started) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert still_running(started) == [], still_running(started)

    # The same command, no hook, resumes the interrupted sweep and runs every trial to its end.
    again = subprocess.run(cmd, env=hook_env(None, probes=False), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, (again.stdout[-2000:], again.stderr[-3000:])
    assert "resuming" in again.stdout
    history, trials = frames(exp)
    assert len(trials) == len(spaces.get_grid("quick").configs) and set(trials["stop_reason"]) == {"completed"}
    assert_full_histories(history, 20, 40)
    record = json.loads((exp / "experiment.json").read_text())
    assert record["status"] == "completed" and len(record["sessions"]) == 2


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def http_server():
    """A plain HTTP server on a free loopback port: something live at --address that is not Ray."""
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: listening(port), 60, "the HTTP server")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


@pytest.mark.ray  # a real sweep command (about 20 s): not the fast lane
@pytest.mark.parametrize("via", ["--address", "RAY_ADDRESS"])
def test_an_address_where_something_else_answers_exits_2_with_one_line_quickly(via, http_server, tmp_path):
    """A live port that is not a Ray GCS (the dashboard's 8265 is the likely typo): before, ray.init retried it for
    ~14 minutes, printing C++ warnings. Also through `--address auto` with RAY_ADDRESS set (as `ray job submit` sets it;
    `auto` without it would find the Ray of whatever else runs on this machine, so it is not tested here)."""
    address, env = (http_server, None) if via == "--address" else ("auto", {"RAY_ADDRESS": http_server})
    cmd = [sys.executable, "-m", "tune_adder.sweep", "--grid", "quick", "--max-steps", "10", "--eval-every", "10", *TINY,
           "--storage", str(tmp_path / "r"), "--address", address]  # fmt: skip
    started = time.monotonic()
    out = subprocess.run(cmd, env=hook_env(env, probes=False), cwd=REPO, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert out.returncode == 2, (out.stdout[-2000:], out.stderr[-2000:])
    assert len(out.stderr.strip().splitlines()) == 1 and http_server in out.stderr and "GCS" in out.stderr, out.stderr
    assert took < 60, took  # the GCS question gives up after 10 s; the rest is Python starting twice
    assert not (tmp_path / "r").exists()


@pytest.mark.ray
def test_the_ray_token_file_is_private_from_its_first_moment(tmp_path):
    """A sweep on its embedded Ray with Ray's token auth on, in a fresh HOME: ~/.ray/auth_token is polled from before
    it exists until the sweep has started, and every look finds it the owner's only (Ray writes it 0644, and the
    sweep used to chmod it only once Ray was up). Ray then guards its GCS with that very token."""
    home, storage, gate = tmp_path / "home", tmp_path / "results", tmp_path / "gate"
    home.mkdir()
    gate.mkdir()  # trials are held at step 20 until the test is done: the sweep cannot end under it
    token = home / ".ray" / "auth_token"
    cmd = [sys.executable, "-m", "tune_adder.sweep", "--grid", "quick", "--max-steps", "20", "--eval-every", "20", *TINY,
           "--storage", str(storage)]  # fmt: skip
    out_file = tmp_path / "stdout.txt"
    with open(out_file, "w") as stdout:
        env = hook_env({"HOME": str(home), "RAY_AUTH_MODE": None, BLOCK_AT: f"20:{gate}"}, probes=False)
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=stdout, stderr=subprocess.DEVNULL)
    modes, answer = [], None
    try:
        deadline, looks = time.monotonic() + 600, 0
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                modes.append(stat.S_IMODE(token.stat().st_mode))
            except FileNotFoundError:
                pass
            looks += 1
            if looks % 200 == 0 and "starting sweep" in out_file.read_text():
                break  # Ray is up and Tune has the sweep: the old chmod had run by now
            time.sleep(0.0005)
        assert proc.poll() is None, "the sweep ended before it started"
        if shutil.which("ss"):
            gcs = [addr for addr, names in listeners(proc.pid) if "gcs_server" in names]
            answer = gcs_answer(gcs[0], token.read_text().strip()) if gcs else "no GCS listening"
    finally:
        (gate / "release").touch()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=300)
    assert modes, "the token file never appeared while the sweep started"
    assert set(modes) == {0o600}, sorted({oct(m) for m in modes})
    assert stat.S_IMODE((home / ".ray").stat().st_mode) & 0o077 == 0
    assert answer in (None, "answered"), answer  # None: no `ss` here to find the GCS


def test_more_trials_than_a_sweep_may_have_exit_2_with_one_line_before_ray_starts(tmp_path):
    """`--grid quick --seeds 100000` asked for 800,000 trials: a 39 MB tuner.pkl, 100 s before anything ran, Ctrl-C
    ignored meanwhile. Refused now, naming the count and the limit, before Ray starts or anything is written."""
    # The limit itself is allowed; one more trial is not, however the trials are asked for.
    assert parse_settings(["--grid", "quick", "--seeds", str(MAX_TRIALS // 8), "--storage", str(tmp_path)]).seeds == MAX_TRIALS // 8
    for argv in (["--grid", "quick", "--seeds", str(MAX_TRIALS // 8 + 1)], ["--search", "optuna", "--num-samples", str(MAX_TRIALS + 1)]):
        with pytest.raises(UsageError, match=f"more than one sweep may run \\({MAX_TRIALS:,}\\)"):
            parse_settings([*argv, "--storage", str(tmp_path)])
    cmd = [sys.executable, "-m", "tune_adder.sweep", "--grid", "quick", "--seeds", "100000", "--storage", str(tmp_path / "r")]
    started = time.monotonic()
    out = subprocess.run(cmd, env=hook_env(None, probes=False), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, (out.stdout[-2000:], out.stderr[-2000:])
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "800,000 trials" in err and f"{MAX_TRIALS:,}" in err and "--seeds" in err, err
    assert time.monotonic() - started < 60 and "ray" not in out.stdout.lower()
    assert not (tmp_path / "r").exists()


def test_a_pack_too_big_for_memory_because_of_its_seeds_says_to_lower_seeds(tmp_path):
    """`--pack seeds --seeds 5000` trains 5000 adders as one model: it is the seeds, not the held-out sets, that do
    not fit, and the refusal says so (it used to say only: lower --eval-size)."""
    with pytest.raises(UsageError) as refused:
        parse_settings(["--grid", "quick", "--pack", "seeds", "--seeds", "5000", "--storage", str(tmp_path)])
    advice = str(refused.value).split("; lower ", 1)[1]
    assert advice.startswith("--seeds"), str(refused.value)
    assert "--eval-size" not in advice, str(refused.value)  # the held-out sets are a few MB of it


@pytest.mark.ray
def test_a_sweep_at_the_trial_limit_starts_and_stops_on_ctrl_c(tmp_path):
    """10,000 trials, the most a sweep may have (`--grid quick --seeds 1250`): Ctrl-C while Tune is still setting them
    up (800,000 used to leave it unheard for 40 s) stops the sweep as always, exit 130 and `interrupted`. Measured on
    2 busy cores: the first trial ran about 50 s after "starting sweep", and Ctrl-C ended the sweep in 16-18 s."""
    cmd = [sys.executable, "-m", "tune_adder.sweep", "--grid", "quick", "--seeds", str(MAX_TRIALS // 8), "--max-steps", "20",
           "--eval-every", "20", *TINY, "--storage", str(tmp_path), "--name", "limit"]  # fmt: skip
    out_file = tmp_path / "stdout.txt"
    with open(out_file, "w") as stdout:
        proc = subprocess.Popen(cmd, env=hook_env(None, probes=False), cwd=REPO, stdout=stdout, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is not None or "starting sweep limit (10000 trials)" in out_file.read_text(), 300,
                 "the sweep to start")  # fmt: skip
        assert proc.poll() is None, out_file.read_text()[-3000:]
        time.sleep(3)  # into Tune's setup of the trials
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, out_file.read_text()[-3000:])
    assert took < 60, took
    assert json.loads((tmp_path / "limit" / "experiment.json").read_text())["status"] == "interrupted"
