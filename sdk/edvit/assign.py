"""ED-ViT step 3: place sub-models on devices.

Each sub-model needs ``memory_mb`` and costs ``work`` (e.g. GFLOPs per image); each device
has a memory limit and a relative speed. A device's load is the sum of its sub-models'
work divided by its speed; the placement minimises the slowest device's load (the
latency of one fused prediction when sub-models run in parallel) without exceeding any
device's memory.

The search is exact (depth-first branch and bound, largest sub-models first, identical
devices tried once) up to a node budget, after which the best placement found so far is
returned and marked ``optimal=False``; it starts from the greedy "longest work first onto
the device that finishes it earliest" placement, so there always is one when any exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ..errors import InputError


class PlacementError(InputError):
    """No placement fits the devices' memory; the message names the device and the shortfall."""


@dataclass(frozen=True)
class Device:
    """An edge device: a name, the memory its sub-models may use (MB = 1e6 bytes), a
    relative speed, and the artifact format it runs (``"onnx"`` or ``"tflite"``)."""

    name: str
    memory_mb: float
    speed: float = 1.0
    target: str = "onnx"

    def __post_init__(self) -> None:
        if not self.name:
            raise InputError("a device needs a name")
        if not self.memory_mb > 0:
            raise InputError(f"device {self.name}: memory_mb must be positive, got {self.memory_mb}")
        if not self.speed > 0:
            raise InputError(f"device {self.name}: speed must be positive, got {self.speed}")
        if self.target not in ("onnx", "tflite"):
            raise InputError(f"device {self.name}: target must be onnx or tflite, got {self.target!r}")


@dataclass(frozen=True)
class SubModelCost:
    """What one sub-model needs: memory (MB) and work (any unit, the same for all)."""

    name: str
    memory_mb: float
    work: float


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


def _greedy(order: list[SubModelCost], devices: Sequence[Device]) -> Optional[list[int]]:
    """Longest work first, onto the device (with room) whose load after it is smallest."""
    loads = [0.0] * len(devices)
    free = [d.memory_mb for d in devices]
    chosen = []
    for sub in order:
        fits = [i for i, d in enumerate(devices) if free[i] >= sub.memory_mb]
        if not fits:
            return None
        best = min(fits, key=lambda i: (loads[i] + sub.work / devices[i].speed, -free[i]))
        loads[best] += sub.work / devices[best].speed
        free[best] -= sub.memory_mb
        chosen.append(best)
    return chosen


def assign(submodels: Sequence[SubModelCost], devices: Sequence[Device], *, node_budget: int = 200_000) -> Placement:
    """The placement of ``submodels`` on ``devices`` that minimises the slowest device's load."""
    if not submodels:
        raise InputError("there are no sub-models to place")
    if not devices:
        raise InputError("there are no devices to place sub-models on")
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise InputError(f"device names must be unique, got {names}")
    _check_fits_somewhere(submodels, devices)
    order = sorted(submodels, key=lambda s: (-s.work, -s.memory_mb, s.name))
    greedy = _greedy(order, devices)
    best_choice = greedy
    best = float("inf")
    if greedy is not None:
        best = max(_loads(order, devices, greedy))
    loads = [0.0] * len(devices)
    free = [d.memory_mb for d in devices]
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
            span = max(loads)
            if span < best - 1e-12:
                best, best_choice = span, list(chosen)
            return
        sub = order[k]
        tried: set[tuple[float, float, float, float]] = set()
        for i, device in enumerate(devices):
            key = (device.memory_mb, device.speed, loads[i], free[i])  # identical states: try once
            if key in tried or free[i] < sub.memory_mb:
                continue
            tried.add(key)
            new_load = loads[i] + sub.work / device.speed
            if new_load >= best - 1e-12:
                continue
            saved = loads[i], free[i]
            loads[i], free[i] = new_load, free[i] - sub.memory_mb
            chosen.append(i)
            search(k + 1)
            chosen.pop()
            loads[i], free[i] = saved

    search(0)
    if best_choice is None:
        biggest = max(order, key=lambda s: s.memory_mb)
        roomiest = max(devices, key=lambda d: d.memory_mb)
        raise PlacementError(
            f"the sub-models cannot be packed into the devices' memory: sub-model {biggest.name} "
            f"({biggest.memory_mb:.2f} MB) finds no room once the others are placed; add memory to a device "
            f"such as {roomiest.name} ({roomiest.memory_mb:.2f} MB) or use more sub-models"
        )
    final_loads = _loads(order, devices, best_choice)
    used = [0.0] * len(devices)
    for sub, i in zip(order, best_choice):
        used[i] += sub.memory_mb
    return Placement(
        assignment={sub.name: devices[i].name for sub, i in zip(order, best_choice)},
        loads={d.name: final_loads[i] for i, d in enumerate(devices)},
        memory_used_mb={d.name: used[i] for i, d in enumerate(devices)},
        makespan=max(final_loads),
        optimal=exhausted,
    )


def _loads(order: Sequence[SubModelCost], devices: Sequence[Device], choice: Sequence[int]) -> list[float]:
    loads = [0.0] * len(devices)
    for sub, i in zip(order, choice):
        loads[i] += sub.work / devices[i].speed
    return loads
