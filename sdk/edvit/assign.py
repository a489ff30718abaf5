"""ED-ViT step 3: place sub-models on devices.

Each sub-model needs ``memory_mb``, costs ``work`` (its latency in ms on the machine that
split, or any unit the same for all) and sends back ``output_bytes``; each device has a
memory limit, a relative speed, a CPU share and a link. A device's load is the time of
one request on it as :func:`~edgevit.edvit.latency.device_time` predicts it: the input
over its link (when it holds any sub-model), its sub-models' work at its rate, their
outputs back. The placement minimises the slowest device's load (the latency of one
fused prediction when devices run in parallel) without exceeding any device's memory.

The search is exact (depth-first branch and bound, largest sub-models first, identical
devices tried once) up to a node budget, after which the best placement found so far is
returned and marked ``optimal=False``; it starts from the greedy "longest work first onto
the device that finishes it earliest" placement, so there always is one when any exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ..errors import InputError
from .devices import Device
from .latency import device_time


class PlacementError(InputError):
    """No placement fits the devices' memory; the message names the device and the shortfall."""


@dataclass(frozen=True)
class SubModelCost:
    """What one sub-model needs: memory (MB), work (ms here, or any unit the same for all)
    and the bytes of its output."""

    name: str
    memory_mb: float
    work: float
    output_bytes: float = 0.0


@dataclass
class Placement:
    """Sub-model name -> device name, each device's load and memory, the slowest load."""

    assignment: dict[str, str]
    loads: dict[str, float]
    memory_used_mb: dict[str, float]
    makespan: float
    optimal: bool = True


def _check_fits_somewhere(submodels: Sequence[SubModelCost], devices: Sequence[Device]) -> None:
    largest = max(devices, key=lambda d: d.memory_mb)
    for sub in submodels:
        if sub.memory_mb > largest.memory_mb:
            raise PlacementError(
                f"sub-model {sub.name} needs {sub.memory_mb:.2f} MB but the largest device, {largest.name} "
                f"({largest.memory_mb:.2f} MB), is {sub.memory_mb - largest.memory_mb:.2f} MB short"
            )
    need = sum(s.memory_mb for s in submodels)
    have = sum(d.memory_mb for d in devices)
    if need > have:
        raise PlacementError(f"the sub-models need {need:.2f} MB together but the devices "
                             f"({', '.join(d.name for d in devices)}) offer {have:.2f} MB: {need - have:.2f} MB short")


class _Loads:
    """Each device's sub-models so far and its predicted load."""

    def __init__(self, devices: Sequence[Device], input_bytes: float) -> None:
        self.devices, self.input_bytes = devices, input_bytes
        self.work: list[list[float]] = [[] for _ in devices]
        self.outputs: list[list[float]] = [[] for _ in devices]
        self.free = [d.memory_mb for d in devices]
        self.load = [0.0] * len(devices)

    def with_sub(self, i: int, sub: SubModelCost) -> float:
        """Device ``i``'s load if ``sub`` joined it."""
        return device_time(self.devices[i], [*self.work[i], sub.work], [*self.outputs[i], sub.output_bytes],
                           self.input_bytes)

    def add(self, i: int, sub: SubModelCost) -> None:
        self.load[i] = self.with_sub(i, sub)
        self.work[i].append(sub.work)
        self.outputs[i].append(sub.output_bytes)
        self.free[i] -= sub.memory_mb

    def remove(self, i: int, sub: SubModelCost) -> None:
        self.work[i].pop()
        self.outputs[i].pop()
        self.free[i] += sub.memory_mb
        self.load[i] = device_time(self.devices[i], self.work[i], self.outputs[i], self.input_bytes)


def _greedy(order: list[SubModelCost], devices: Sequence[Device], input_bytes: float) -> Optional[list[int]]:
    """Longest work first, onto the device (with room) whose load after it is smallest."""
    state = _Loads(devices, input_bytes)
    chosen = []
    for sub in order:
        fits = [i for i in range(len(devices)) if state.free[i] >= sub.memory_mb]
        if not fits:
            return None
        best = min(fits, key=lambda i: (state.with_sub(i, sub), -state.free[i]))
        state.add(best, sub)
        chosen.append(best)
    return chosen


def _replay(order: Sequence[SubModelCost], devices: Sequence[Device], choice: Sequence[int],
            input_bytes: float) -> _Loads:
    state = _Loads(devices, input_bytes)
    for sub, i in zip(order, choice):
        state.add(i, sub)
    return state


def assign(submodels: Sequence[SubModelCost], devices: Sequence[Device], *, input_bytes: float = 0.0,
           node_budget: int = 200_000) -> Placement:
    """The placement of ``submodels`` on ``devices`` that minimises the slowest device's load;
    ``input_bytes``: what a request sends to each device that holds a sub-model."""
    if not submodels:
        raise InputError("there are no sub-models to place")
    if not devices:
        raise InputError("there are no devices to place sub-models on")
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise InputError(f"device names must be unique, got {names}")
    _check_fits_somewhere(submodels, devices)
    order = sorted(submodels, key=lambda s: (-s.work, -s.memory_mb, s.name))
    greedy = _greedy(order, devices, input_bytes)
    best_choice = greedy
    best = float("inf")
    if greedy is not None:
        best = max(_replay(order, devices, greedy, input_bytes).load)
    state = _Loads(devices, input_bytes)
    chosen: list[int] = []
    nodes = 0
    exhausted = True

    def search(k: int) -> None:
        nonlocal best, best_choice, nodes, exhausted
        if nodes >= node_budget:
            exhausted = False
            return
        nodes += 1
        if k == len(order):
            span = max(state.load)
            if span < best - 1e-12:
                best, best_choice = span, list(chosen)
            return
        sub = order[k]
        tried: set[tuple] = set()
        for i, device in enumerate(devices):
            key = (device.memory_mb, device.speed, device.cpus, device.link_mbps, device.link_delay_ms,
                   tuple(state.work[i]), state.free[i])  # identical states: try once
            if key in tried or state.free[i] < sub.memory_mb:
                continue
            tried.add(key)
            if state.with_sub(i, sub) >= best - 1e-12:
                continue
            state.add(i, sub)
            chosen.append(i)
            search(k + 1)
            chosen.pop()
            state.remove(i, sub)

    search(0)
    if best_choice is None:
        biggest = max(order, key=lambda s: s.memory_mb)
        roomiest = max(devices, key=lambda d: d.memory_mb)
        raise PlacementError(
            f"the sub-models cannot be packed into the devices' memory: sub-model {biggest.name} "
            f"({biggest.memory_mb:.2f} MB) finds no room once the others are placed; add memory to a device "
            f"such as {roomiest.name} ({roomiest.memory_mb:.2f} MB) or use more sub-models"
        )
    final = _replay(order, devices, best_choice, input_bytes)
    return Placement(
        assignment={sub.name: devices[i].name for sub, i in zip(order, best_choice)},
        loads={d.name: final.load[i] for i, d in enumerate(devices)},
        memory_used_mb={d.name: d.memory_mb - final.free[i] for i, d in enumerate(devices)},
        makespan=max(final.load),
        optimal=exhausted,
    )
