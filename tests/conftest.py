"""One real Ray cluster per test session (a `ray start --head --block` subprocess on free ports, 2 CPUs).

Sweeps in the tests join it with --address; it is stopped by its pid at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

# Torch in the test process runs on one thread, as a trial and `train` do: on a busy 2-core box two threads spin
# against the other work (a probe ladder took 100x longer with two, benchmarks/bench_probes.py).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
RAY_BIN = Path(sys.executable).with_name("ray")
PORT_FLAGS = (
    "--port", "--node-manager-port", "--object-manager-port",
    "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port", "--metrics-export-port",
    "--runtime-env-agent-port",
)  # fmt: skip


def free_ports(n: int) -> list[int]:
    """n distinct ports free right now (other helpers' Rays share this machine: never a fixed port)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def sweep_env() -> dict[str, str]:
    """Environment for sweep subprocesses: the worktree importable, no Ray token auth, quiet CUDA probing."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RAY_AUTH_MODE"] = "disabled"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def _wait_for_ray(address: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:  # a limit: on a loaded box start is slow
    host, port = address.split(":")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        raise RuntimeError(f"Ray at {address} did not come up in {timeout:.0f} s")
    # The GCS answers before the raylet has registered its CPUs; wait until the cluster shows them.
    probe = "import ray; ray.init(address=%r, logging_level='ERROR'); print(ray.cluster_resources().get('CPU', 0))" % address
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", probe], env=sweep_env(), capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1] not in ("0", "0.0"):
            return
        time.sleep(1)
    raise RuntimeError(f"Ray at {address} has no CPUs after {timeout:.0f} s")


RAY_FIXTURES = ("ray_address", "quick_sweep")  # fixtures that start Ray (the session's cluster, a real sweep)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a RAY_FIXTURES fixture, itself or through another fixture, is marked `ray`, so the fast lane
    (`-m "not ray"`) never starts Ray; tests that start Ray or a sweep on their own carry the mark in their file."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in RAY_FIXTURES):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_address() -> str:
    """Start a 2-CPU Ray head for the whole session and return its address."""
    ports = free_ports(len(PORT_FLAGS))
    temp_dir = tempfile.mkdtemp(prefix="rt_")  # short: Ray's socket paths must stay under ~100 chars
    cmd = [str(RAY_BIN), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
           "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp_dir,
           "--node-ip-address", "127.0.0.1", "--min-worker-port", "0", "--max-worker-port", "0"]  # 0: random ports
    for flag, port in zip(PORT_FLAGS, ports):
        cmd += [flag, str(port)]
    log = open(os.path.join(temp_dir, "ray_start.log"), "w")
    proc = subprocess.Popen(cmd, env=sweep_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{ports[0]}"
    try:
        _wait_for_ray(address, proc)
        yield address
    finally:
        # `ray start --block` tears down the processes it started when it is told to stop.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


# The README's main command, shrunk: the quick grid under 2 seeds (the replay tests need two), 60 steps.
QUICK_SWEEP = ["--grid", "quick", "--seeds", "2", "--max-steps", "60", "--eval-every", "20", "--eval-size", "100",
               "--status-every", "5"]  # fmt: skip


@pytest.fixture(scope="session")
def quick_sweep(tmp_path_factory) -> dict:
    """One real quick sweep per session, as a user runs it: no --address (the embedded local Ray, Ray's token auth
    on, in a fresh HOME), length-generalisation probes included. Only read: test_sweep checks it and its rerun,
    test_analysis_e2e analyses it, test_replay replays it. While its first trial is held at step 20 (test hook),
    the fixture records what the sweep's processes listen on (`ss -ltnp`) and how its GCS answers a client
    without the token, with a wrong one and with the right one; then it lets the sweep finish."""
    from tune_adder.testhooks import BLOCK_AT

    root = tmp_path_factory.mktemp("quick")
    home, storage, gate = root / "home", root / "results", root / "gate"
    home.mkdir()
    gate.mkdir()
    env = {**sweep_env(), "HOME": str(home)}
    env.pop("RAY_AUTH_MODE")  # Ray's default: token auth on
    cmd = [sys.executable, "-m", "tune_adder.sweep", *QUICK_SWEEP, "--storage", str(storage)]
    proc = subprocess.Popen(cmd, env={**env, BLOCK_AT: f"20:{gate}"}, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    network: dict = {}
    try:
        deadline = time.time() + 600
        while not list(gate.glob("*.blocked")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        network["held"] = bool(list(gate.glob("*.blocked"))) and proc.poll() is None  # the hook fired, the sweep runs
        network["driver_pid"] = proc.pid
        if network["held"] and shutil.which("ss"):
            network["listeners"] = listeners(proc.pid)
            network["owners"] = listeners(proc.pid, with_pids=True)
            network["http"] = [address for address, _ in network["listeners"] if answers_http(address)]
            gcs = [addr for addr, names in network["listeners"] if "gcs_server" in names]
            token_file = home / ".ray" / "auth_token"
            token = token_file.read_text().strip() if token_file.is_file() else ""
            clients = (("none", None), ("wrong", "x" * 32), ("right", token))
            network["gcs_answers"] = {name: gcs_answer(gcs[0], t) for name, t in clients} if gcs else {}
    finally:
        (gate / "release").touch()
        stdout, stderr = proc.communicate(timeout=900)
    out = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    return {"cmd": cmd, "env": env, "out": out, "home": home, "storage": storage, "network": network,
            "experiment": storage / "quick-fifo-seeds2-steps60"}  # fmt: skip


def listeners(root_pid: int, with_pids: bool = False) -> list[tuple[str, list]]:
    """(local address:port, owning process names, or (name, pid) pairs with `with_pids`) of every TCP socket that
    `root_pid` or a descendant listens on."""
    import re

    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # ended meanwhile
                pass
    tree, grown = {root_pid}, True
    while grown:
        new = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree, grown = tree | new, bool(new)
    out = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30).stdout.splitlines():
        owners = re.findall(r'\("([^"]+)",pid=(\d+)', line)
        if any(int(pid) in tree for _, pid in owners):
            shown = {(name, int(pid)) for name, pid in owners} if with_pids else {name for name, _ in owners}
            out.append((line.split()[3], sorted(shown)))
    return out


def answers_http(address: str) -> bool:
    """Whether a plain HTTP GET to `address` (ss's local address, '*:PORT' or 'HOST:PORT') gets an HTTP status line:
    Ray's gRPC ports do not answer HTTP/1.1, the dashboard does."""
    import socket

    host, port = address.rsplit(":", 1)
    host = "127.0.0.1" if host in ("*", "[::]", "0.0.0.0") else host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            conn.settimeout(2)
            return conn.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def gcs_answer(address: str, token: str | None) -> str:
    """How a Ray GCS at `address` answers a fresh client (no token file) that sends `token` (None: auth off)."""
    host = "127.0.0.1" if address.startswith("*:") or address.startswith("[::]:") else address.rsplit(":", 1)[0]
    target = f"{host}:{address.rsplit(':', 1)[1]}"
    env = {k: v for k, v in sweep_env().items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=tempfile.mkdtemp(prefix="nohome_"), RAY_AUTH_MODE="disabled" if token is None else "token")
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    code = ("import ray._raylet as r\n"
            "try:\n"
            f"    r.GcsClient(address={target!r}).internal_kv_keys(b'', namespace=None, timeout=10)\n"
            "    print('answered')\n"
            "except Exception as e:\n"
            "    print('refused', type(e).__name__, str(e).splitlines()[0][:200])\n")  # fmt: skip
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "no answer in 60 s"
    return (done.stdout.strip().splitlines() or ["no output: " + done.stderr[-300:]])[-1]
