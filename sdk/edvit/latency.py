"""Predicted per-request latency of a split plan on its devices (torch-free).

A request is the input sent to every device that holds a sub-model, each device's
sub-models run one after another, their features come back, and the coordinator runs
the fusion head. The prediction of one request, batch 1:

- **send** to a device: the input's bytes over its link (``link_mbps``) plus the link's
  one-way delay (``link_delay_ms``); nothing when the device declares no link. An input
  made from images travels as 8-bit pixels (:mod:`.wire`), one byte per value;
- **compute** on a device: every sub-model's latency measured by ``edgevit split`` on the
  machine that split (ONNX Runtime, 1 thread) divided by the device's rate, ``speed`` x
  its CPU share (``cpus``, capped at one core: a sub-model runs on one thread);
- **receive**: the features' bytes over the link, plus the delay;
- the slowest device, then the **fusion** head's measured latency on the coordinator.

That model knows links, not the backend: a real transport also pays for dispatching a
task per device, serializing the input and waking each device's process, which on small
devices costs more than the bytes do. Given ``round_trip_ms``, a **measured** round trip of
the same input to the same devices with nothing computed
(:meth:`edgevit.edvit.runner.PlanSession.round_trip_ms`), the prediction is that round trip
plus the slowest device's compute plus the fusion head: send and receive are then not
modelled but measured.

Placement uses the same model (:func:`device_time`), so the assignment minimises what
this module predicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import InputError
from .devices import Device

FLOAT_BYTES = 4


def rate(device: Device) -> float:
    """How much faster than the splitting machine's one core the device runs a sub-model."""
    share = 1.0 if device.cpus is None else min(device.cpus, 1.0)
    return device.speed * share


def transfer_ms(nbytes: float, device: Device) -> float:
    """One message of ``nbytes`` over the device's link: serialization plus one-way delay."""
    wire = 0.0 if device.link_mbps is None else nbytes * 8 / (device.link_mbps * 1e6) * 1e3
    return wire + device.link_delay_ms


def device_time(device: Device, compute_ms: Sequence[float], output_bytes: Sequence[float],
                input_bytes: float) -> float:
    """Send, compute and receive on one device holding sub-models of these costs (0 if none)."""
    if not compute_ms:
        return 0.0
    return (transfer_ms(input_bytes, device) + sum(compute_ms) / rate(device)
            + transfer_ms(sum(output_bytes), device))


@dataclass
class LatencyPrediction:
    """A request's predicted latency (ms) and where it goes, per device."""

    total_ms: float
    fusion_ms: float
    input_bytes: int
    devices: dict[str, dict[str, float]] = field(default_factory=dict)  # device -> send, compute, receive, total
    critical_device: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"total_ms": round(self.total_ms, 3), "fusion_ms": round(self.fusion_ms, 3),
                "input_bytes": self.input_bytes, "critical_device": self.critical_device,
                "devices": {name: {k: round(v, 3) for k, v in parts.items()} for name, parts in self.devices.items()}}


def predict(compute_ms: Mapping[str, float], output_bytes: Mapping[str, float], assignment: Mapping[str, str],
            devices: Sequence[Device], input_bytes: float, fusion_ms: float,
            round_trip_ms: float | None = None) -> LatencyPrediction:
    """The latency of one request when sub-model ``name`` (``compute_ms[name]`` here) runs on
    ``devices[assignment[name]]`` and sends back ``output_bytes[name]``; with a measured
    ``round_trip_ms``, that round trip replaces every device's send and receive."""
    by_name = {d.name: d for d in devices}
    missing = sorted(set(assignment.values()) - set(by_name))
    if missing:
        raise InputError(f"the assignment names devices that are not given: {', '.join(missing)}")
    parts: dict[str, dict[str, float]] = {}
    for name, device in by_name.items():
        subs = [s for s, d in assignment.items() if d == name]
        if not subs:
            continue
        compute = sum(compute_ms[s] for s in subs) / rate(device)
        if round_trip_ms is None:
            send = transfer_ms(input_bytes, device)
            receive = transfer_ms(sum(output_bytes[s] for s in subs), device)
            parts[name] = {"send": send, "compute": compute, "receive": receive, "total": send + compute + receive}
        else:
            parts[name] = {"round_trip": round_trip_ms, "compute": compute, "total": round_trip_ms + compute}
    critical = max(parts, key=lambda n: parts[n]["total"])
    return LatencyPrediction(parts[critical]["total"] + fusion_ms, fusion_ms, int(input_bytes), parts, critical)


def predict_latency(plan, devices: Sequence[Device] | None = None,
                    assignment: Mapping[str, str] | None = None, *, pixels: bool = True,
                    round_trip_ms: float | None = None) -> LatencyPrediction:
    """A plan's predicted per-request latency (batch 1) on ``devices`` (default: the plan's),
    with the plan's assignment unless another is given (e.g. the full model on one device:
    ``{"full": "dev0"}``); the input travels as 8-bit pixels, or as float32 with
    ``pixels=False`` (inputs that are not images). ``round_trip_ms``: a measured empty round
    trip to those devices (see the module doc) instead of the link model."""
    measured = {s.name: s.latency_ms for s in plan.submodels}
    measured["full"] = plan.model.get("latency_ms")
    if any(v is None for k, v in measured.items() if k != "full") or plan.fusion.get("latency_ms") is None:
        raise InputError(f"{plan.directory}: the plan has no measured latencies (split with edgevit 0.3 or later)")
    assignment = dict(plan.assignment if assignment is None else assignment)
    unknown = sorted(set(assignment) - {k for k, v in measured.items() if v is not None})
    if unknown:
        raise InputError(f"the plan has no measured latency for {', '.join(unknown)}")
    outputs = {s.name: s.feature_dim * FLOAT_BYTES for s in plan.submodels}
    outputs["full"] = len(plan.classes) * FLOAT_BYTES
    fusion_ms = 0.0 if "full" in assignment else float(plan.fusion["latency_ms"])
    return predict(measured, outputs, assignment, list(devices or plan.devices), plan.input_bytes(pixels=pixels),
                   fusion_ms, round_trip_ms)
