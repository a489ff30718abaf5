"""The Ray processes of a fleet: the head in the root namespace, one node per device in its own.

Each node is ``ray start ... --block`` run by a shell that first enters the node's cgroups
(:mod:`.cgroups`) and then execs it (a device's through ``nsenter`` into its network
namespace), in a session of its own so that a Ctrl-C at the terminal reaches the fleet,
which stops the nodes in order, and not the nodes themselves. A device node offers one
unit of the custom resource named after the device (where the Ray backend places that
device's sub-models), binds to its namespace's address, and runs no log monitor (the
backend does not forward worker logs); the head offers no CPUs, so nothing but the
coordinator's own work runs outside the devices. Every node runs with
``RAY_AUTH_MODE=disabled`` (the fleet is private to this machine; Ray 2.60 would otherwise
require the token of ``~/.ray/auth_token`` from some processes and not others) and
``TMPDIR`` inside the run directory, so a worker killed while loading leaves no scratch
file behind, and without the background work listed in ``QUIET_RAY`` (which would take a
few percent of a small device's CPU quota while idle). Torch-free; Ray is imported only to ask the head which nodes are alive.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import first_line
from ...optional import require
from .cgroups import enter_command
from .host import NETNS_DIR, FleetError

HEAD_OBJECT_STORE = 256 * 1024 * 1024
DEVICE_OBJECT_STORE = 80 * 1024 * 1024  # Ray's smallest is 75 MiB; the backend sends batches inside tasks
# Ray's background work that a device's CPU quota would pay for and the fleet does not need:
# its memory monitor (it reads the whole machine's memory, not the device's limit, which the
# kernel enforces), per-handler event statistics, metrics collection
QUIET_RAY = {"RAY_memory_monitor_refresh_ms": "0", "RAY_event_stats": "0", "RAY_enable_metrics_collection": "0"}
HEAD_PORTS = ("--port", "--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")


@dataclass
class Node:
    """One running ``ray start --block``: for the head (``device`` None) or a device."""

    device: str | None
    group: str
    process: subprocess.Popen
    log: Path

    def last_line(self) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1].strip()[:300] if lines else ""


def ray_executable() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.is_file() else shutil.which("ray")
    if not found:
        raise FleetError("the 'ray' command is not installed beside this Python: pip install \".[ray]\"")
    return found


def node_env(run_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    (run_dir / "tmp").mkdir(exist_ok=True)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", TMPDIR=str(run_dir / "tmp"),
               PYTHONUNBUFFERED="1", **QUIET_RAY)
    return env


def _free_ports(host: str, count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _spawn(device: str | None, group: str, command: list[str], run_dir: Path, netns: str | None) -> Node:
    log = run_dir / f"{group}.log"
    if netns:
        command = ["nsenter", f"--net={NETNS_DIR / netns}", *command]
    script = f'{enter_command(group)}; exec "$0" "$@"'
    with open(log, "wb") as out:
        process = subprocess.Popen(["sh", "-c", script, *command], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=node_env(run_dir), start_new_session=True)
    return Node(device, group, process, log)


def start_head(group: str, ip: str, run_dir: Path) -> tuple[Node, str]:
    """The head node (GCS and the coordinator's raylet) on ``ip``; returns it and its address."""
    ports = _free_ports(ip, len(HEAD_PORTS))
    command = [ray_executable(), "start", "--head", "--block", "--node-ip-address", ip, "--num-cpus", "0",
               "--include-dashboard", "false", "--include-log-monitor", "false", "--disable-usage-stats",
               "--temp-dir", str(run_dir / "ray"), "--object-store-memory", str(HEAD_OBJECT_STORE)]
    for flag, port in zip(HEAD_PORTS, ports):
        command += [flag, str(port)]
    return _spawn(None, group, command, run_dir, None), f"{ip}:{ports[0]}"


def start_device(device: str, cpus: float | None, group: str, ip: str, head: str, netns: str,
                 run_dir: Path) -> Node:
    """Device ``device``'s node, in its namespace and cgroups, joining the head at ``head``."""
    command = [ray_executable(), "start", "--block", "--address", head, "--node-ip-address", ip,
               "--num-cpus", str(max(1, math.ceil(cpus or 1))), "--resources", json.dumps({device: 1}),
               "--object-store-memory", str(DEVICE_OBJECT_STORE), "--include-log-monitor", "false",
               "--disable-usage-stats"]
    return _spawn(device, group, command, run_dir, netns)


def alive_nodes(address: str) -> dict[str, dict[str, Any]]:
    """The head's view: node address -> resources, for every live node (empty if it does not answer)."""
    require("ray", "for the emulated fleet")
    # the GCS's node table, without joining the cluster as a driver
    from ray._raylet import GcsClient

    host, _, port = address.rpartition(":")
    try:  # a GcsClient waits half a minute for a head that is not listening yet
        socket.create_connection((host, int(port)), timeout=1).close()
        info = GcsClient(address=address).get_all_node_info(timeout=5)
    except Exception:  # noqa: BLE001 - not up yet
        return {}
    return {n.node_manager_address: dict(n.resources_total) for n in info.values() if n.state == 0}


def wait_for(nodes: list[Node], address: str, timeout_s: float, say: Callable[[str], None],
             respawn: Callable[[Node], Node] | None = None, attempts: int = 4) -> list[Node]:
    """Until every node has joined the head at ``address`` (the head answers, each device
    offers its resource). A device node whose ``ray start`` gives up (Ray waits 30 s for its
    raylet, which a loaded machine can exceed) is started again by ``respawn``, up to
    ``attempts`` times; a node that still fails, or is still absent at the timeout, is a
    FleetError naming its device. Returns the nodes (respawned ones replaced)."""
    deadline = time.monotonic() + timeout_s
    nodes = list(nodes)
    tries = {id(n): 1 for n in nodes}
    waiting = list(nodes)
    while waiting:
        for node in list(waiting):
            if node.process.poll() is None:
                continue
            what = f"device {node.device!r}" if node.device else "the head node"
            if respawn is None or node.device is None or tries[id(node)] >= attempts:
                raise FleetError(f"{what} did not come up: its 'ray start' exited with code "
                                 f"{node.process.returncode}: {node.last_line() or 'no output'}")
            say(f"{node.device}: its node did not start ({node.last_line()[:120]}); starting it again")
            again = respawn(node)
            tries[id(again)] = tries[id(node)] + 1
            nodes[nodes.index(node)] = again
            waiting[waiting.index(node)] = again
        offered = {r for resources in alive_nodes(address).values() for r in resources}
        joined = [n for n in waiting if (n.device in offered if n.device else offered)]
        for node in joined:
            say(f"{node.device or 'head'} is up")
        waiting = [n for n in waiting if n not in joined]
        if waiting and time.monotonic() > deadline:
            names = ", ".join(repr(n.device) if n.device else "the head node" for n in waiting)
            raise FleetError(f"device {names} did not join the fleet within {timeout_s:g} s "
                             f"(is its link up? its node said: {waiting[0].last_line() or 'nothing'})")
        if waiting:
            time.sleep(0.2)
    return nodes


def reap(nodes: list[Node]) -> None:
    """Collect the exit status of nodes already ended (their groups were emptied)."""
    for node in nodes:
        try:
            node.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            node.process.kill()
        except Exception as exc:  # noqa: BLE001 - teardown goes on
            sys.stderr.write(f"edgevit: fleet: {first_line(exc)}\n")
