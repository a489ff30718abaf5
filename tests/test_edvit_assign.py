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


# --- placement by predicted latency: CPU shares and links ---------------------------------------

def request_ms(device, works, outputs, input_bytes):
    """One request on a device, written out independently of edgevit.edvit.latency."""
    if not works:
        return 0.0
    link = (lambda n: 0.0) if device.link_mbps is None else (lambda n: n * 8 / (device.link_mbps * 1e3))
    share = 1.0 if device.cpus is None else min(1.0, device.cpus)
    return (link(input_bytes) + device.link_delay_ms + sum(works) / (device.speed * share)
            + link(sum(outputs)) + device.link_delay_ms)


@pytest.mark.parametrize("seed", range(20))
def test_placement_minimises_predicted_latency_with_links(seed):
    rnd = random.Random(100 + seed)
    subs = [SubModelCost(f"s{i}", rnd.uniform(1, 3), rnd.uniform(2, 40), rnd.choice([0, 800, 4000]))
            for i in range(rnd.randint(1, 5))]
    devices = [Device(f"d{j}", rnd.uniform(4, 12), rnd.choice([0.5, 1.0, 2.0]), cpus=rnd.choice([None, 0.3, 2.0]),
                      link_mbps=rnd.choice([None, 20.0, 1000.0]), link_delay_ms=rnd.choice([0.0, 2.0]))
               for j in range(rnd.randint(1, 4))]
    input_bytes = rnd.choice([0, 12_288, 602_112])
    best = float("inf")
    for choice in itertools.product(range(len(devices)), repeat=len(subs)):
        members = [[s for s, i in zip(subs, choice) if i == j] for j in range(len(devices))]
        if all(sum(s.memory_mb for s in m) <= d.memory_mb for m, d in zip(members, devices)):
            best = min(best, max(request_ms(d, [s.work for s in m], [s.output_bytes for s in m], input_bytes)
                                 for m, d in zip(members, devices)))
    if best == float("inf"):
        with pytest.raises(PlacementError):
            assign(subs, devices, input_bytes=input_bytes)
        return
    placement = assign(subs, devices, input_bytes=input_bytes)
    assert placement.optimal and placement.makespan == pytest.approx(best)


def test_a_slow_link_keeps_work_off_its_device():
    """By work alone the two sub-models go to two devices; the input's 2 s on a 2.4 Mbit/s
    link make one device faster for both."""
    subs = [SubModelCost("a", 1.0, 10.0), SubModelCost("b", 1.0, 10.0)]
    devices = [Device("wired", 10.0, link_mbps=1000.0), Device("radio", 10.0, link_mbps=2.4)]
    assert len(set(assign(subs, devices).assignment.values())) == 2
    placement = assign(subs, devices, input_bytes=602_112)
    assert set(placement.assignment.values()) == {"wired"}
    assert placement.makespan == pytest.approx(602_112 * 8 / 1e6 + 20.0)


def test_cpu_share_scales_compute_up_to_one_core():
    from edgevit.edvit.latency import device_time

    assert device_time(Device("q", 1.0, cpus=0.25), [10.0], [0], 0) == pytest.approx(40.0)
    assert device_time(Device("big", 1.0, cpus=4.0), [10.0], [0], 0) == pytest.approx(10.0)  # one thread
    assert device_time(Device("idle", 1.0), [], [], 10**6) == 0.0  # holds nothing: sent nothing


def test_device_fields_are_checked_and_read(tmp_path):
    from edgevit.edvit import read_devices
    from edgevit.errors import InputError

    for bad in ({"cpus": 0}, {"link_mbps": -1}, {"link_delay_ms": -0.5}):
        with pytest.raises(InputError, match=next(iter(bad))):
            Device("d", 1.0, **bad)
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  - {name: pi, memory_mb: 8, cpus: 0.3, link_mbps: 20, link_delay_ms: 1.5}\n")
    assert read_devices(path) == [Device("pi", 8.0, cpus=0.3, link_mbps=20.0, link_delay_ms=1.5)]
    path.write_text("devices:\n  - {name: pi, memory_mb: 8, cpus: fast}\n")
    with pytest.raises(InputError, match="must be numbers"):
        read_devices(path)
