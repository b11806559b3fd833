"""Start and kill real Ray nodes on this machine for multi-node tests: `ray start --block` per node, free ports.

Every node is one `ray start --block` process in its own session; its raylet, agents and workers are
its descendants, so a node is stopped (or crashed) by those pids alone, never with `ray stop`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
# Find a dead node within seconds, not the default ~30 s, so a lost-node test stays short.
FAST_FAILURE_ENV = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "4",
}


def free_ports(n: int) -> list[int]:
    """n distinct ports free right now (other Ray clusters may run here: never use Ray's defaults)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_flags() -> list[str]:
    names = ("node-manager-port", "object-manager-port", "dashboard-agent-grpc-port", "dashboard-agent-listen-port",
             "metrics-export-port", "runtime-env-agent-port")
    return [f"--{name}={port}" for name, port in zip(names, free_ports(len(names)))]


def _descendants(root: int) -> set[int]:
    """root and every live process below it, from /proc (no psutil here)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


@dataclass
class RayNode:
    name: str
    proc: subprocess.Popen
    log: Path
    pids_seen: set[int] = field(default_factory=set)

    def pids(self) -> set[int]:
        """The node's processes now (remembered, so a later kill also reaches ones whose parent died)."""
        if self.proc.poll() is None:
            self.pids_seen |= _descendants(self.proc.pid)
        return self.pids_seen

    def node_id(self) -> str:
        """Ray's id of this node, from its raylet's command line (no driver needed to ask)."""
        for pid in sorted(self.pids()):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for arg in args:
                if arg.startswith(b"--node_id=") and any(a.endswith(b"/raylet") for a in args[:1]):
                    return arg.split(b"=", 1)[1].decode()
        raise RuntimeError(f"no raylet found among the processes of ray node {self.name}")

    def kill(self) -> None:
        """Crash the node: SIGKILL its `ray start`, raylet, agents and workers at once."""
        for pid in self.pids() | _descendants(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """End the node if it still runs: SIGTERM to `ray start --block` (it stops its own children), then kill."""
        if self.proc.poll() is None:
            self.pids()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def start_node(name: str, args: list[str], log_dir: Path, env: dict[str, str], timeout_s: float = 90) -> RayNode:
    """`ray start --block ARGS` in its own session; returns once it says the runtime started."""
    log = log_dir / f"{name}.log"
    out = open(log, "w")
    proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *_port_flags(), *args],
                            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)
    node = RayNode(name, proc, log)
    deadline = time.monotonic() + timeout_s
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            node.stop()
            raise RuntimeError(f"ray node {name} did not start; its log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    node.pids()
    return node


def start_cluster(tmp: Path, node_cpus: dict[str, int]) -> tuple[str, list[RayNode]]:
    """A head and workers as separate `ray start` processes; each gets a custom resource named after it.

    Returns the head's GCS address and the nodes (head first). Node names are the custom resources,
    so `ray.nodes()` tells them apart even though they share an IP.
    """
    env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **FAST_FAILURE_ENV}
    gcs_port, dashboard_port = free_ports(2)
    address = f"127.0.0.1:{gcs_port}"
    names = list(node_cpus)
    nodes: list[RayNode] = []
    try:
        head = names[0]
        nodes.append(start_node(head, [
            "--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1", f"--temp-dir={tmp}",
            "--include-dashboard=false", f"--dashboard-port={dashboard_port}",
            f"--num-cpus={node_cpus[head]}", "--num-gpus=0", f"--resources={json.dumps({head: 1})}",
        ], tmp, env))
        for name in names[1:]:
            nodes.append(start_node(name, [
                f"--address={address}", "--node-ip-address=127.0.0.1",
                f"--num-cpus={node_cpus[name]}", "--num-gpus=0", f"--resources={json.dumps({name: 1})}",
            ], tmp, env))
        return address, nodes
    except BaseException:
        for node in reversed(nodes):
            node.stop()
        raise


def alive_nodes(address: str) -> dict[str, str]:
    """{node_id: node name (its custom resource)} of the live nodes, asked from a short-lived driver."""
    code = (
        "import json, ray\n"
        f"ray.init(address={address!r}, log_to_driver=False, logging_level='ERROR')\n"
        "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    if out.returncode != 0:
        raise RuntimeError(f"could not list Ray nodes at {address}: {out.stderr[-2000:]}")
    resources = json.loads(out.stdout.strip().splitlines()[-1])
    names = {}
    for node_id, res in resources.items():
        custom = [k for k in res if k not in ("CPU", "GPU", "memory", "object_store_memory") and not k.startswith("node:")]
        names[node_id] = custom[0] if custom else "?"
    return names
