"""The Fleet: one Ray node per device of a devices.yaml on this machine, torn down on every exit.

``Fleet(devices).start()`` (or ``with fleet(devices) as f:``) checks the machine, then
builds, in order: the run directory (with its owner record), the head's cgroup, the bridge,
and for each device its cgroups (memory limit ``memory_mb`` + ``node_memory_mb``),
namespace and shaped link; then it starts the head and every device's node, waits until
each has joined (a device that does not join in time is a FleetError naming it, after
everything is torn down), and only then gives each device its CPU quota (``cpus``; Ray's
start-up at a device's share would take minutes). ``address`` is the head's, for
``run_plan(..., backend="ray", address=f.address)``.

:meth:`Fleet.stop` undoes it all in reverse: it disconnects this process from the fleet's
Ray, ends every process of the devices' and then the head's cgroups, deletes the
namespaces, links and bridge, removes the cgroups and the run directory. It finds each
resource by the run's prefix, not by what it remembers having made, so it also finishes a
half-built fleet; it is idempotent, and it runs on ``with`` exit, SIGINT, SIGTERM, SIGHUP
and at interpreter exit. A run killed outright (SIGKILL) is swept by
:func:`.sweep.cleanup` (``edgevit fleet --cleanup``). Torch-free.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

from ..assign import Device
from ..devices import read_devices
from . import cgroups, network, nodes
from .host import RUN_ROOT, FleetError, check_host, new_run_id, write_owner

NODE_MEMORY_MB = 300.0  # a device node (raylet, agents: ~160 MB) and an idle worker (~100 MB), with room; on top of memory_mb
STARTING = 2  # device nodes started at once (more at once time out on a loaded machine)
RESERVED = ("CPU", "GPU", "memory", "object_store_memory")  # Ray's own resource names


def _devices(devices: Sequence[Device] | str | Path) -> list[Device]:
    found = read_devices(devices) if isinstance(devices, (str, Path)) else list(devices)
    if not found:
        raise FleetError("a fleet needs at least one device")
    for device in found:
        if device.name in RESERVED or device.name.startswith("node:") or not device.name.isprintable():
            raise FleetError(f"device {device.name!r}: that name is one of Ray's own resources; rename the device")
        if device.link_delay_ms:
            raise FleetError(f"device {device.name!r}: link_delay_ms is not emulated (this kernel has no tc netem); "
                             "set it to 0 or remove it")
    if len({d.name for d in found}) != len(found):
        raise FleetError(f"device names must be unique, got {[d.name for d in found]}")
    return found


class Fleet:
    """An emulated fleet of edge devices on this machine (see the module doc)."""

    def __init__(self, devices: Sequence[Device] | str | Path, *, node_memory_mb: float = NODE_MEMORY_MB,
                 startup_timeout_s: float = 120.0, down: Iterable[str] = (),
                 say: Callable[[str], None] | None = None) -> None:
        """``down``: devices whose link is cut from the start (their node cannot join:
        a device that never comes up); ``say`` is told of progress."""
        self.devices = _devices(devices)
        self.down = set(down)
        unknown = self.down - {d.name for d in self.devices}
        if unknown:
            raise FleetError(f"down names no device of the fleet: {sorted(unknown)}")
        self.node_memory_mb = node_memory_mb
        self.startup_timeout_s = startup_timeout_s
        self.say = say or (lambda message: None)
        self.run = ""
        self.address = ""
        self.subnet: Any = None
        self.nodes: list[nodes.Node] = []  # the live nodes, head first
        self._spawned: list[nodes.Node] = []  # every node process ever started, to reap at the end
        self._lock = threading.Lock()
        self._stopped = False

    # --- naming -------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.run

    def index(self, device: str) -> int:
        for i, d in enumerate(self.devices):
            if d.name == device:
                return i
        raise FleetError(f"the fleet has no device {device!r} (it has {', '.join(d.name for d in self.devices)})")

    def group(self, device: str | None) -> str:
        """The cgroup name of a device's node (``None``: the head's)."""
        return f"{self.run}-head" if device is None else f"{self.run}-d{self.index(device)}"

    def ip(self, device: str | None) -> str:
        """The address of a device's node (``None``: the head's)."""
        return network.address(self.subnet, None if device is None else self.index(device))

    # --- bring up -----------------------------------------------------------------------
    def start(self) -> Fleet:
        """Bring the fleet up (see the module doc); on any failure, tear it down and raise."""
        if self.run:
            raise FleetError("this fleet was already started; make a new Fleet")
        check_host()
        self.run = new_run_id()
        _register(self)
        try:
            self.run_dir.mkdir(mode=0o755)
            write_owner(self.run_dir)
            self.say(f"fleet {self.run}: {len(self.devices)} device(s), run directory {self.run_dir}")
            cgroups.make_group(self.group(None))
            with network.subnet_lock():  # two fleets starting at once must not take the same subnet
                self.subnet = network.choose_subnet()
                network.make_bridge(self.run, self.subnet)
            for i, device in enumerate(self.devices):
                memory = int((device.memory_mb + self.node_memory_mb) * 1e6)
                cgroups.make_group(self.group(device.name), None, memory)  # its CPU quota once it is up
                network.add_device(self.run, i, self.subnet, device.link_mbps, up=device.name not in self.down)
            head, self.address = nodes.start_head(self.group(None), self.ip(None), self.run_dir)
            self.nodes = [head]
            self._spawned.append(head)
            nodes.wait_for([head], self.address, self.startup_timeout_s, self.say)
            for wave in range(0, len(self.devices), STARTING):  # a few at a time: Ray gives a raylet 30 s
                started = [self._start_node(d.name) for d in self.devices[wave:wave + STARTING]]
                self.nodes += nodes.wait_for(started, self.address, self.startup_timeout_s, self.say, self._respawn)
            for device in self.devices:  # after start-up, which would take minutes at a device's share
                if device.cpus is not None:
                    cgroups.set_cpus(self.group(device.name), device.cpus)
        except BaseException:
            self.stop()
            raise
        self.say(f"fleet {self.run} is up at {self.address}")
        return self

    def _start_node(self, device: str) -> nodes.Node:
        i = self.index(device)
        node = nodes.start_device(device, self.devices[i].cpus, self.group(device), self.ip(device), self.address,
                                  network.netns_name(self.run, i), self.run_dir)
        self._spawned.append(node)
        return node

    def _respawn(self, node: nodes.Node) -> nodes.Node:
        cgroups.kill_group(node.group, grace_s=0.5)
        nodes.reap([node])
        return self._start_node(str(node.device))

    # --- while up -----------------------------------------------------------------------
    def cut(self, device: str) -> None:
        """Cut a device's link (both directions; its connections wait, as on a real link)."""
        network.set_link(self.run, self.index(device), up=False)

    def restore(self, device: str) -> None:
        """Bring a cut link back."""
        network.set_link(self.run, self.index(device), up=True)

    def set_bandwidth(self, mbps: float, devices: Iterable[str] | None = None) -> None:
        """Shape every device's link (or those named) to ``mbps`` Mbit/s."""
        for name in devices if devices is not None else [d.name for d in self.devices]:
            network.shape(self.run, self.index(name), mbps)

    def set_memory(self, device: str, memory_mb: float) -> None:
        """Change a device's memory limit to ``memory_mb`` + ``node_memory_mb`` (the kernel
        refuses a limit below what the node uses now: a FleetError); its peak starts again."""
        cgroups.set_memory(self.group(device), int((memory_mb + self.node_memory_mb) * 1e6))
        cgroups.reset_peak(self.group(device))

    def pids(self, device: str | None) -> set[int]:
        """The processes of a device's node (``None``: the head's), workers included."""
        return cgroups.pids(self.group(device))

    def usage(self, device: str) -> dict[str, Any]:
        """A device's memory limit and peak (MB), out-of-memory kills and CPU throttling so far."""
        group = self.group(device)
        peak = cgroups.read_stat(group, "memory", "memory.max_usage_in_bytes")
        limit = cgroups.read_stat(group, "memory", "memory.limit_in_bytes")
        return {"memory_limit_mb": limit / 1e6 if limit else None, "memory_peak_mb": peak / 1e6 if peak else None,
                "oom_kills": cgroups.read_stat(group, "memory", "memory.oom_control:oom_kill"),
                "throttled_periods": cgroups.read_stat(group, "cpu", "cpu.stat:nr_throttled")}

    # --- tear down ----------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Tear everything down, in reverse order (idempotent); returns what could not be removed."""
        with self._lock:
            if self._stopped or not self.run:
                return []
            self._stopped = True
        _disconnect(self.address)
        device_groups = [g for g in cgroups.groups(self.run) if not g.endswith("-head")]
        for group in device_groups:
            cgroups.kill_group(group, grace_s=1.0)
        cgroups.kill_group(f"{self.run}-head", grace_s=1.0)
        nodes.reap(self._spawned)
        left = network.remove(self.run)
        for group in cgroups.groups(self.run):
            left += cgroups.remove_group(group)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.run_dir.exists():
            left.append(str(self.run_dir))
        _unregister(self)
        if left:
            sys.stderr.write(f"edgevit: fleet {self.run}: could not remove {', '.join(left)}\n")
        return left

    def __enter__(self) -> Self:
        return self if self.run else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fleet(devices: Sequence[Device] | str | Path, **options: Any) -> Fleet:
    """A started :class:`Fleet` (use it in ``with``, or call ``stop``)."""
    return Fleet(devices, **options).start()


def _disconnect(address: str) -> None:
    """Disconnect this process's Ray from the fleet's head before the head goes away."""
    ray = sys.modules.get("ray")
    if not address or ray is None or not ray.is_initialized():
        return
    try:
        connected = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - not connected after all
        connected = None
    if connected == address:
        ray.shutdown()


# --- every live fleet of this process is torn down on exit and on fatal signals -----------
_LIVE: set[Fleet] = set()
_PREVIOUS: dict[int, Any] = {}
_HOOKED: list[bool] = []  # atexit registered
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _register(fleet_: Fleet) -> None:
    if not _LIVE and not _HOOKED:
        atexit.register(_stop_all)
        _HOOKED.append(True)
    if not _PREVIOUS and threading.current_thread() is threading.main_thread():  # signals: main thread only
        for sig in _SIGNALS:
            _PREVIOUS[sig] = signal.signal(sig, _on_signal)
    _LIVE.add(fleet_)


def _unregister(fleet_: Fleet) -> None:
    _LIVE.discard(fleet_)


def _stop_all() -> None:
    for fleet_ in list(_LIVE):
        fleet_.stop()


def _on_signal(signum: int, frame: Any) -> None:
    _stop_all()
    previous = _PREVIOUS.get(signum)
    if callable(previous):
        previous(signum, frame)
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    elif previous != signal.SIG_IGN:
        raise SystemExit(128 + signum)
