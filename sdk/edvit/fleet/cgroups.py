"""cgroup v1 groups of a fleet: a device's CPU quota and memory limit, and every process of its node.

Each node (the head and every device) gets a group of the same name under the ``cpu`` and
the ``memory`` controller; its ``ray start`` process enters both before it runs, so the
raylet, Ray's agents and every worker the raylet spawns are in them too, and a node's
processes are exactly the group's (:func:`kill_group` ends them all, even orphans).

CPU: ``cpus`` cores is a CFS quota over a short period, ``max(2 ms, 1 ms / cpus)``: over the
default 100 ms period a request of a few milliseconds would run at full speed and then
wait, so the quota would not slow it; a short period spreads the share evenly over one
request (the kernel's smallest quota is 1 ms, hence the longer period below 0.5 cores).
The quota is a ceiling; for it to be a floor too on a machine busy with other work, each
group has ``cpu.shares`` 16384 (a process outside, or a session's autogroup, has 1024):
whenever a device is runnable it gets its share before other work, as far as the machine
has cores (a device stands for a machine of its own).

:func:`own_memory` is what a worker reads about its own memory group (limit, use, kills by
the kernel's out-of-memory killer) to explain why it, or the worker before it, died.
Torch-free.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from .host import CGROUP_ROOT, CONTROLLERS, RUN_PATTERN, FleetError

SHARES = 16384  # cpu.shares of a fleet group: 16x a process of the machine's (see the module doc)
MIN_PERIOD_US = 2000
MIN_QUOTA_US = 1000  # the kernel refuses a smaller quota or period


def cfs_period_quota(cpus: float) -> tuple[int, int]:
    """The CFS period and quota (microseconds) that give ``cpus`` cores (see the module doc)."""
    period = max(MIN_PERIOD_US, round(MIN_QUOTA_US / cpus))
    return period, max(MIN_QUOTA_US, round(cpus * period))


def group_dir(controller: str, name: str) -> Path:
    return CGROUP_ROOT / controller / name


def make_group(name: str, cpus: float | None = None, memory_bytes: int | None = None) -> None:
    """Create group ``name`` under both controllers, with a CPU quota and a memory limit if given."""
    for controller in CONTROLLERS:
        try:
            group_dir(controller, name).mkdir()
        except OSError as exc:
            raise FleetError(f"cannot create the cgroup {group_dir(controller, name)}: {exc.strerror or exc}") from None
    _write(group_dir("cpu", name) / "cpu.shares", SHARES)
    if cpus is not None:
        set_cpus(name, cpus)
    if memory_bytes is not None:
        set_memory(name, memory_bytes)


def set_memory(name: str, memory_bytes: int) -> None:
    """Limit group ``name`` to ``memory_bytes`` (its processes' memory, page cache included)."""
    _write(group_dir("memory", name) / "memory.limit_in_bytes", memory_bytes)


def set_cpus(name: str, cpus: float) -> None:
    """Give group ``name`` a quota of ``cpus`` cores (it applies at once to its processes)."""
    period, quota = cfs_period_quota(cpus)
    _write(group_dir("cpu", name) / "cpu.cfs_quota_us", -1)  # lift the quota first: a new period must fit the old one
    _write(group_dir("cpu", name) / "cpu.cfs_period_us", period)
    _write(group_dir("cpu", name) / "cpu.cfs_quota_us", quota)


def _write(path: Path, value: int) -> None:
    try:
        path.write_text(f"{value}\n")
    except OSError as exc:
        raise FleetError(f"cannot write {value} to {path}: {exc.strerror or exc}") from None


def reset_peak(name: str) -> None:
    """Start group ``name``'s memory peak (``memory.max_usage_in_bytes``) again from now."""
    _write(group_dir("memory", name) / "memory.max_usage_in_bytes", 0)


def enter_command(name: str) -> str:
    """Shell words that move the shell into group ``name`` (both controllers) before it execs."""
    return "; ".join(f'echo $$ > {group_dir(c, name)}/cgroup.procs' for c in CONTROLLERS)


def pids(name: str) -> set[int]:
    """The processes in group ``name`` (either controller)."""
    found: set[int] = set()
    for controller in CONTROLLERS:
        try:
            text = (group_dir(controller, name) / "cgroup.procs").read_text()
        except OSError:
            continue
        found.update(int(p) for p in text.split())
    return found


def kill_group(name: str, grace_s: float = 2.0, timeout_s: float = 20.0) -> None:
    """End every process of group ``name``: SIGTERM, then SIGKILL after ``grace_s``, until it is empty."""
    deadline = time.monotonic() + timeout_s
    term_until = time.monotonic() + grace_s
    sent_term = False
    while (members := pids(name)) and time.monotonic() < deadline:
        sig = signal.SIGTERM if time.monotonic() < term_until else signal.SIGKILL
        if sig == signal.SIGKILL or not sent_term:
            for pid in members:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            sent_term = True
        time.sleep(0.05)


def remove_group(name: str, timeout_s: float = 10.0) -> list[str]:
    """Remove group ``name`` under both controllers (killing what is left in it); what could not be removed."""
    kill_group(name, grace_s=0.0)
    stuck = []
    for controller in CONTROLLERS:
        path = group_dir(controller, name)
        deadline = time.monotonic() + timeout_s
        while path.exists():
            try:
                path.rmdir()
            except FileNotFoundError:
                break
            except OSError:  # busy: a process still exiting
                if time.monotonic() > deadline:
                    stuck.append(str(path))
                    break
                time.sleep(0.05)
    return stuck


def groups(run: str | None = None) -> list[str]:
    """Names of the fleet groups (of one run, or of all) under either controller."""
    names: set[str] = set()
    for controller in CONTROLLERS:
        try:
            entries = list((CGROUP_ROOT / controller).iterdir())
        except OSError:
            continue
        names.update(e.name for e in entries if e.is_dir() and (m := RUN_PATTERN.match(e.name))
                     and (run is None or m.group(1) == run))
    return sorted(names)


def read_stat(name: str, controller: str, key: str) -> int | None:
    """A number from a group's file (``memory.max_usage_in_bytes``) or a keyed line of one
    (``cpu.stat:nr_throttled``, ``memory.oom_control:oom_kill``)."""
    filename, _, field = key.partition(":")
    try:
        text = (group_dir(controller, name) / filename).read_text()
    except OSError:
        return None
    if not field:
        return int(text.split()[0])
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == field:
            return int(parts[1])
    return None


def own_memory() -> dict[str, int] | None:
    """This process's memory group: ``limit`` and ``usage`` in bytes and ``oom_kills`` (the
    kernel's out-of-memory kills in it so far); None when it has no limit (v1 or v2)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):  # v1
            base = CGROUP_ROOT / "memory" / path.lstrip("/")
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.oom_control")
            break
        if controllers == "" and (CGROUP_ROOT / path.lstrip("/") / "memory.max").is_file():  # v2
            base = CGROUP_ROOT / path.lstrip("/")
            files = ("memory.max", "memory.current", "memory.events")
            break
    else:
        return None
    try:
        limit_text, usage_text, events = ((base / f).read_text() for f in files)
    except OSError:
        return None
    if limit_text.strip() == "max" or int(limit_text) >= 1 << 60:
        return None
    kills = next((int(v) for k, v in (ln.split() for ln in events.splitlines() if len(ln.split()) == 2)
                  if k == "oom_kill"), 0)
    return {"limit": int(limit_text), "usage": int(usage_text), "oom_kills": kills}
