"""What the fleet needs from this machine, and the one way it runs a system command.

A fleet needs Linux, root, ``ip`` and ``tc`` (iproute2; the kernel's ``tbf`` shapes the links),
``nsenter``, and the cgroup v1 ``cpu`` and ``memory`` controllers mounted under
``/sys/fs/cgroup``. :func:`check_host` says what is missing in one line (a
:class:`FleetUnavailable`, exit code 2) before anything is created.

Every resource of a fleet is named after its run: ``evf`` and six hex digits (``evf3fa9c1``)
start the names of its network namespaces, links, cgroups and its run directory
``/tmp/evf3fa9c1`` (Ray's session files, the node logs, and ``owner``: the pid and start
time of the process that made it), so that :func:`.sweep.cleanup` can find what a killed
run left behind. Torch-free.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ...errors import ClusterError, InputError, first_line

PREFIX = "evf"
RUN_PATTERN = re.compile(r"^(evf[0-9a-f]{6})")  # a run's id, at the start of each of its resources' names
CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "memory")
RUN_ROOT = Path("/tmp")  # run directories: short paths, as Ray's Unix sockets live under them
NETNS_DIR = Path("/run/netns")


class FleetError(ClusterError):
    """The fleet could not be brought up (a device's node did not join, a command failed)."""


class FleetUnavailable(InputError):
    """This machine cannot host a fleet (not Linux, not root, a tool or controller missing)."""


def new_run_id() -> str:
    """A fresh run id, ``evf`` and six hex digits, not used by any run directory here."""
    while True:
        run = f"{PREFIX}{secrets.token_hex(3)}"
        if not (RUN_ROOT / run).exists():
            return run


def check_host() -> None:
    """Raise :class:`FleetUnavailable` (one line) unless this machine can host a fleet."""
    if not sys.platform.startswith("linux"):
        raise FleetUnavailable(f"an emulated fleet needs Linux (network namespaces, tc, cgroups); "
                               f"this is {sys.platform}")
    if os.geteuid() != 0:
        raise FleetUnavailable("an emulated fleet needs root (it creates network namespaces, links and cgroups): "
                               "run it with sudo")
    missing = [tool for tool in ("ip", "tc", "nsenter") if shutil.which(tool) is None]
    if missing:
        raise FleetUnavailable(f"an emulated fleet needs {' and '.join(missing)} on PATH "
                               "(iproute2 and util-linux)")
    absent = [c for c in CONTROLLERS if not (CGROUP_ROOT / c / "cgroup.procs").is_file()
              or not (CGROUP_ROOT / c / ("cpu.cfs_quota_us" if c == "cpu" else "memory.limit_in_bytes")).is_file()]
    if absent:
        raise FleetUnavailable(f"an emulated fleet needs the cgroup v1 {' and '.join(absent)} controller(s) mounted "
                               f"at {CGROUP_ROOT}/<controller> (this machine has none there)")


def sh(*args: str, netns: str | None = None, check: bool = True, timeout: float = 30.0) -> str:
    """Run a system command (in network namespace ``netns``); a failure is a FleetError
    naming the command and its first line of error output, unless ``check`` is False."""
    command: Sequence[str] = ["ip", "netns", "exec", netns, *args] if netns else list(args)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        if not check:
            return ""
        raise FleetError(f"'{' '.join(command)}' failed: {first_line(exc)}") from None
    if done.returncode != 0 and check:
        detail = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise FleetError(f"'{' '.join(command)}' failed: {detail.splitlines()[0]}")
    return done.stdout


def process_started(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc/PID/stat), None if gone:
    with the pid, it tells a live owner from an unrelated process that got the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def write_owner(run_dir: Path) -> None:
    """Record this process as the owner of a run."""
    (run_dir / "owner").write_text(f"{os.getpid()} {process_started(os.getpid())}\n")


def owner_alive(run_dir: Path) -> bool:
    """Whether the process that made a run is still running (a run without an owner file is dead)."""
    try:
        pid, started = (run_dir / "owner").read_text().split()
    except (OSError, ValueError):
        return False
    return process_started(int(pid)) == started
