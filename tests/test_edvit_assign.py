"""ED-ViT device assignment: optimal against brute force, and the edge cases."""

from __future__ import annotations

import itertools
import random

import pytest

from edgevit.edvit import Device, PlacementError, SubModelCost, assign


def brute_force(subs, devices):
    best = float("inf")
    for choice in itertools.product(range(len(devices)), repeat=len(subs)):
        mem = [0.0] * len(devices)
        load = [0.0] * len(devices)
        for s, i in zip(subs, choice):
            mem[i] += s.memory_mb
            load[i] += s.work / devices[i].speed
        if all(m <= d.memory_mb for m, d in zip(mem, devices)):
            best = min(best, max(load))
    return best


@pytest.mark.parametrize("seed", range(25))
def test_placement_is_optimal_and_within_memory(seed):
    rnd = random.Random(seed)
    subs = [SubModelCost(f"s{i}", rnd.uniform(1, 5), rnd.uniform(0.5, 4)) for i in range(rnd.randint(1, 6))]
    devices = [Device(f"d{j}", rnd.uniform(4, 12), rnd.choice([0.5, 1.0, 1.0, 2.0])) for j in range(rnd.randint(1, 4))]
    expected = brute_force(subs, devices)
    if expected == float("inf"):
        with pytest.raises(PlacementError):
            assign(subs, devices)
        return
    placement = assign(subs, devices)
    assert placement.optimal
    assert placement.makespan == pytest.approx(expected)
    assert set(placement.assignment) == {s.name for s in subs}
    for d in devices:
        assert placement.memory_used_mb[d.name] <= d.memory_mb + 1e-9


def test_one_device_takes_everything():
    subs = [SubModelCost(f"s{i}", 1.0, float(i + 1)) for i in range(4)]
    placement = assign(subs, [Device("pi", 10.0, speed=2.0)])
    assert set(placement.assignment.values()) == {"pi"} and placement.makespan == pytest.approx(5.0)


def test_more_submodels_than_devices_balances_work():
    subs = [SubModelCost(f"s{i}", 1.0, w) for i, w in enumerate([3, 3, 2, 2, 2])]
    placement = assign(subs, [Device("a", 10.0), Device("b", 10.0)])
    assert placement.makespan == pytest.approx(6.0)  # {3,3} and {2,2,2}


def test_faster_device_gets_more_work():
    subs = [SubModelCost(f"s{i}", 1.0, 1.0) for i in range(6)]
    placement = assign(subs, [Device("jetson", 10.0, speed=2.0), Device("pi", 10.0, speed=1.0)])
    counts = {d: list(placement.assignment.values()).count(d) for d in ("jetson", "pi")}
    assert counts == {"jetson": 4, "pi": 2}


def test_a_device_too_small_for_any_submodel_is_left_empty():
    subs = [SubModelCost("s0", 3.0, 1.0), SubModelCost("s1", 3.0, 1.0)]
    placement = assign(subs, [Device("tiny", 1.0, speed=10.0), Device("big", 8.0)])
    assert set(placement.assignment.values()) == {"big"} and placement.memory_used_mb["tiny"] == 0


def test_impossible_placements_name_the_device_and_the_shortfall():
    with pytest.raises(PlacementError, match=r"sub-model s0 needs 9.00 MB but the largest device, big \(8.00 MB\), "
                                             r"is 1.00 MB short"):
        assign([SubModelCost("s0", 9.0, 1.0)], [Device("small", 2.0), Device("big", 8.0)])
    with pytest.raises(PlacementError, match="offer 10.00 MB: 2.00 MB short"):
        assign([SubModelCost(f"s{i}", 4.0, 1.0) for i in range(3)], [Device("a", 5.0), Device("b", 5.0)])
    with pytest.raises(PlacementError, match="cannot be packed"):  # 18 MB fit in 20 MB, but not as 6+6+6
        assign([SubModelCost(f"s{i}", 6.0, 1.0) for i in range(3)], [Device("a", 10.0), Device("b", 10.0)])


def test_bad_devices_are_rejected():
    with pytest.raises(Exception, match="memory_mb must be positive"):
        Device("x", 0)
    with pytest.raises(Exception, match="unique"):
        assign([SubModelCost("s", 1, 1)], [Device("x", 2), Device("x", 3)])
