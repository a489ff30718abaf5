"""Find and remove what fleet runs left behind: ``edgevit fleet --cleanup``.

A run's resources all start with its id (:mod:`.host`): run directories ``/tmp/evf*``,
cgroups, network namespaces, links. :func:`leftovers` lists them by run; :func:`cleanup`
removes the runs whose owner process is gone (a run killed outright, or one whose
teardown failed), in the order :meth:`.core.Fleet.stop` uses: the devices' processes,
then the head's, the network, the cgroups, the run directory. Runs whose owner is still
running are left alone unless ``all_runs``. Torch-free.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from . import cgroups, network
from .host import RUN_PATTERN, RUN_ROOT, owner_alive


def leftovers() -> dict[str, list[str]]:
    """Run id -> its resources on this machine (cgroups, namespaces, links, run directory)."""
    found: dict[str, list[str]] = {}

    def add(name: str, what: str) -> None:
        match = RUN_PATTERN.match(name)
        if match:
            found.setdefault(match.group(1), []).append(what)

    for group in cgroups.groups():
        add(group, f"cgroup {group}")
    for ns in network.namespaces():
        add(ns, f"namespace {ns}")
    for link in network.links():
        add(link, f"link {link}")
    for entry in RUN_ROOT.iterdir():
        if entry.is_dir() and RUN_PATTERN.fullmatch(entry.name):
            add(entry.name, f"directory {entry}")
    return found


def remove_run(run: str) -> list[str]:
    """Remove one run's processes and resources; what could not be removed."""
    groups = cgroups.groups(run)
    for group in [g for g in groups if not g.endswith("-head")] + [g for g in groups if g.endswith("-head")]:
        cgroups.kill_group(group, grace_s=0.5)
    left = network.remove(run)
    for group in groups:
        left += cgroups.remove_group(group)
    shutil.rmtree(RUN_ROOT / run, ignore_errors=True)
    if (RUN_ROOT / run).exists():
        left.append(str(RUN_ROOT / run))
    return left


def cleanup(all_runs: bool = False, say: Callable[[str], None] | None = None) -> dict[str, list[str]]:
    """Remove every dead run's leftovers (every run's with ``all_runs``); returns what was
    removed, by run. A run still in use is reported through ``say`` and kept."""
    say = say or (lambda message: None)
    removed: dict[str, list[str]] = {}
    for run, resources in sorted(leftovers().items()):
        if not all_runs and owner_alive(RUN_ROOT / run):
            say(f"{run} is in use (its owner is running): kept")
            continue
        left = remove_run(run)
        removed[run] = [r for r in resources if not any(r.endswith(x) for x in left)]
        say(f"{run}: removed {len(removed[run])} resource(s)" + (f"; could not remove {', '.join(left)}" if left else ""))
    return removed
