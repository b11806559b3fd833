"""`ray up` for real against this machine: sshd on 127.0.0.1, a throwaway user, the local-provider config.

Needs root, sshd and rsync (`.ci/run` installs openssh-server and rsync with apt-get when it runs as root);
skips elsewhere. Everything it creates (user, keys, sshd, chmods) is undone by pid and by name at the end.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from ray_nodes import _port_flags, free_ports

REPO = Path(__file__).resolve().parents[1]
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
RAY = str(Path(sys.executable).with_name("ray"))


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (it creates a user and starts sshd); CI runs it as root"
    missing = [tool for tool in ("ssh", "ssh-keygen", "rsync", "useradd", "userdel") if not shutil.which(tool)]
    if not os.access(SSHD, os.X_OK):
        missing.append("sshd")
    if missing:
        return f"needs {', '.join(missing)} (apt-get install openssh-server rsync; .ci/run does this as root)"
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 22)) == 0:
            return "something already listens on 127.0.0.1:22; the local provider can only use port 22"
    return None


pytestmark = [pytest.mark.ray, pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]


def _sh(*cmd: str, timeout: float = 300, check: bool = True, **kw) -> subprocess.CompletedProcess:
    run = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and run.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {run.returncode}\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}")
    return run


def _grant_traverse(path: Path, undo: list) -> None:
    """Let other users reach `path` (o+x on each ancestor lacking it); the old modes go on `undo`."""
    for d in [path, *path.parents]:
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            undo.append((d, stat.S_IMODE(mode)))
            os.chmod(d, stat.S_IMODE(mode) | stat.S_IXOTH)


def _user_pids(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


@pytest.fixture
def loopback_host(tmp_path_factory):
    """A throwaway non-root user reachable as user@127.0.0.1 with a fresh key, via our own sshd."""
    user = f"taup{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="ta-rayup-"))  # root-only: the keys and sshd's files
    undo_modes: list = []
    sshd = None
    created_run_sshd = not Path("/run/sshd").exists()
    try:
        _sh("useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", user)
        home = Path(pwd.getpwnam(user).pw_dir)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "client_key"))
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key"))
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        shutil.copy(work / "client_key.pub", ssh_dir / "authorized_keys")
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        # The user's Python is this test's environment: make it reachable, put it first on PATH in
        # ~/.bashrc (the launcher runs commands in login shells), and keep Ray's files in the home.
        _grant_traverse(Path(sys.prefix), undo_modes)
        _grant_traverse(Path(os.path.realpath(sys.executable)).parent, undo_modes)
        bashrc = home / ".bashrc"
        old = bashrc.read_text() if bashrc.exists() else ""
        bashrc.write_text(
            f'export PATH="{Path(sys.executable).parent}:$PATH"\n'
            f'export RAY_TMPDIR="$HOME/rt" RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0\n' + old
        )
        _sh("chown", "-R", f"{user}:{user}", str(home))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        (work / "sshd_config").write_text(
            "\n".join([
                "Port 22", "ListenAddress 127.0.0.1", f"HostKey {work / 'host_key'}", f"PidFile {work / 'sshd.pid'}",
                f"AllowUsers {user}", "PermitRootLogin no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes", "AuthorizedKeysFile .ssh/authorized_keys", "UsePAM no", "X11Forwarding no",
                "MaxStartups 100", "MaxSessions 100", "",
            ])
        )
        sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(work / "sshd_config")], stdout=subprocess.DEVNULL,
                                stderr=open(work / "sshd.log", "w"))
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", 22)) == 0:
                    break
            if sshd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(work / 'sshd.log').read_text()}")
            time.sleep(0.1)
        yield {"user": user, "home": home, "key": work / "client_key", "work": work}
    finally:
        if sshd is not None:
            sshd.send_signal(signal.SIGTERM)
            sshd.wait(timeout=10)
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            uid = None
        if uid is not None:
            for pid in _user_pids(uid):  # only the throwaway user's processes: all of them came from this test
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
            subprocess.run(["userdel", "--remove", user], capture_output=True)
        for d, mode in reversed(undo_modes):
            os.chmod(d, mode)
        if created_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def loopback_config(host: dict, out: Path) -> tuple[Path, int]:
    """cluster/local.yaml pointed at user@127.0.0.1, its Ray on free ports; returns the path and the GCS port."""
    config = yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())
    gcs_port = free_ports(1)[0]
    config["cluster_name"] = f"ta-loopback-{host['user']}"
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["auth"] = {"ssh_user": host["user"], "ssh_private_key": str(host["key"])}
    config.update(min_workers=0, max_workers=0)
    # The user's environment is this test's (set in ~/.bashrc above), not a fresh pip install.
    config["setup_commands"] = ["cd ~/tune_adder && python -c 'import ray, torch, tune_adder.metrics' && ray --version"]
    # Other Ray clusters may run on this machine: no default ports; two CPUs is all it has.
    config["head_start_ray_commands"] = [
        cmd.replace("--port=6379", f"--port={gcs_port} --num-cpus=2 --include-dashboard=false {' '.join(_port_flags())}")
        for cmd in config["head_start_ray_commands"]
    ]
    path = out / "loopback.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, gcs_port


def _ray(*args: str, timeout: float = 300) -> str:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    return _sh(RAY, *args, timeout=timeout, cwd=REPO, env=env).stdout  # cwd: file_mounts' "." is the repository


# The quick grid, short: what a user would submit, small enough for CI (trials skip the length-generalisation
# probes, seconds each: tests/test_sweep.py checks them).
SWEEP = ("TUNE_ADDER_TEST_NO_PROBES=1 python -m tune_adder.sweep --grid quick --max-steps 20 --eval-every 10 --eval-size 200"
         " --quiet")


def test_ray_up_runs_a_sweep_and_brings_its_frames_back(loopback_host, tmp_path):
    import pandas as pd

    config, _ = loopback_config(loopback_host, tmp_path)
    local = tmp_path / "pulled"
    try:
        _ray("up", "-y", "--no-config-cache", str(config), timeout=600)
        # As the README does it: run the sweep on the head against the cluster (`--address auto`), storage in
        # the user's home (one node here; a multi-node cluster needs shared storage such as s3://).
        out = _ray("exec", str(config), f"cd ~/tune_adder && {SWEEP} --address auto --storage ~/results --name loopback",
                   timeout=600)
        assert "8 of 8 trials" in out, out[-3000:]
        _ray("rsync-down", str(config), "~/results/loopback/", f"{local}/")
    finally:
        _ray("down", "-y", str(config), timeout=300)
    trials = pd.read_parquet(local / "trials.parquet")
    history = pd.read_parquet(local / "history.parquet")
    assert len(trials) == 8 and set(trials["stop_reason"]) == {"completed"}
    assert set(history["step"]) == {10, 20}
    assert (local / "experiment.json").exists()
