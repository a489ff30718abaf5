"""The fleet's network: a bridge for the head, one network namespace per device, shaped links.

The head lives in the root namespace on a bridge ``<run>b`` holding the first address of
a private /24 (``10.213.X.1``, X the first subnet no interface here uses). Each device
``i`` has its own namespace ``<run>-d<i>``, joined to the bridge by a veth pair
(``<run>h<i>`` on the bridge, ``<run>d<i>`` in the namespace, address ``10.213.X.<i+2>``,
default route via the head): devices reach the head and, through the bridge, each other,
and nothing is routed to the outside. A link's bandwidth is a token bucket (``tc tbf``) on
both ends of its pair, so uploads and downloads are shaped alike; its burst is 1 ms of
traffic (at least 16 KB), so a request is never sent faster than the link. Cutting a link
takes its bridge end down (both directions stop; connections survive a short cut). This
kernel has no ``netem``, so links have no added delay. Torch-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
from collections.abc import Iterator

from .host import RUN_PATTERN, FleetError, sh

SUBNET_BASE = "10.213"
MIN_BURST = 16 * 1024
QUEUE = "200ms"  # the longest a packet may wait in a shaped link's queue before it is dropped


def bridge_name(run: str) -> str:
    return f"{run}b"


def netns_name(run: str, index: int) -> str:
    return f"{run}-d{index}"


def host_end(run: str, index: int) -> str:
    return f"{run}h{index}"


def device_end(run: str, index: int) -> str:
    return f"{run}d{index}"


def used_addresses() -> list[ipaddress.IPv4Interface]:
    text = sh("ip", "-4", "-o", "addr", "show")
    return [ipaddress.IPv4Interface(m) for m in re.findall(r"inet (\S+)", text)]


def choose_subnet() -> ipaddress.IPv4Network:
    """The first ``10.213.X.0/24`` that no interface of this machine is in."""
    taken = used_addresses()
    for x in range(256):
        net = ipaddress.IPv4Network(f"{SUBNET_BASE}.{x}.0/24")
        if not any(a.network.overlaps(net) for a in taken):
            return net
    raise FleetError(f"no free subnet {SUBNET_BASE}.X.0/24 left for the fleet's links")


@contextlib.contextmanager
def subnet_lock() -> Iterator[None]:
    """Held while a fleet picks its subnet and puts its bridge on it (an flock on /run)."""
    fd = os.open("/run", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def address(subnet: ipaddress.IPv4Network, index: int | None) -> str:
    """The head's address (``index`` None) or device ``index``'s, in ``subnet``."""
    return str(subnet.network_address + (1 if index is None else index + 2))


def make_bridge(run: str, subnet: ipaddress.IPv4Network) -> None:
    bridge = bridge_name(run)
    sh("ip", "link", "add", bridge, "type", "bridge")
    sh("ip", "addr", "add", f"{address(subnet, None)}/{subnet.prefixlen}", "dev", bridge)
    sh("ip", "link", "set", bridge, "up")


def add_device(run: str, index: int, subnet: ipaddress.IPv4Network, mbps: float | None, up: bool = True) -> None:
    """Device ``index``'s namespace and link (shaped to ``mbps``; cut from the start unless ``up``)."""
    ns, host, dev = netns_name(run, index), host_end(run, index), device_end(run, index)
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", host, "type", "veth", "peer", "name", dev)
    sh("ip", "link", "set", dev, "netns", ns)
    sh("ip", "link", "set", host, "master", bridge_name(run))
    sh("ip", "addr", "add", f"{address(subnet, index)}/{subnet.prefixlen}", "dev", dev, netns=ns)
    sh("ip", "link", "set", "lo", "up", netns=ns)
    sh("ip", "link", "set", dev, "up", netns=ns)
    sh("ip", "route", "add", "default", "via", address(subnet, None), netns=ns)
    if mbps is not None:
        shape(run, index, mbps)
    if up:
        sh("ip", "link", "set", host, "up")


def shape(run: str, index: int, mbps: float) -> None:
    """Set device ``index``'s link to ``mbps`` Mbit/s, both directions."""
    rate_bytes = mbps * 1e6 / 8
    burst = max(MIN_BURST, int(rate_bytes / 1000))
    qdisc = ["root", "tbf", "rate", f"{int(mbps * 1000)}kbit", "burst", str(burst), "latency", QUEUE]
    sh("tc", "qdisc", "replace", "dev", host_end(run, index), *qdisc)
    sh("tc", "qdisc", "replace", "dev", device_end(run, index), *qdisc, netns=netns_name(run, index))


def set_link(run: str, index: int, up: bool) -> None:
    """Cut (``up`` False) or restore device ``index``'s link."""
    sh("ip", "link", "set", host_end(run, index), "up" if up else "down")


def namespaces(run: str | None = None) -> list[str]:
    """The fleet namespaces (of one run, or of all) on this machine."""
    names = [line.split()[0] for line in sh("ip", "netns", "list", check=False).splitlines() if line.strip()]
    return sorted(n for n in names if (m := RUN_PATTERN.match(n)) and (run is None or m.group(1) == run))


def links(run: str | None = None) -> list[str]:
    """The fleet links (bridges, veth ends) of one run, or of all, in the root namespace."""
    found = re.findall(r"^\d+: ([^:@\s]+)", sh("ip", "-o", "link", "show", check=False), flags=re.MULTILINE)
    return sorted(n for n in found if (m := RUN_PATTERN.match(n)) and (run is None or m.group(1) == run))


def remove(run: str) -> list[str]:
    """Delete a run's namespaces (their veth pairs go with them), links and bridge; what is left."""
    for ns in namespaces(run):
        sh("ip", "netns", "delete", ns, check=False)
    for link in links(run):
        sh("ip", "link", "delete", link, check=False)
    return namespaces(run) + links(run)
