"""The unsplit model as a plan of one: ``full.onnx`` on one named device, through the same runner.

:func:`unsplit_plan` views a split plan as a plan whose only "sub-model" is ``full`` (the
unsplit model the plan directory keeps, with its checksum), placed on ``device``, and
whose fusion is the identity (the full model already answers with class logits). A
``PlanSession`` on it runs the unsplit model the way it runs a split one (same worker,
same Ray actor, same deadlines, timings and faults), which makes the two comparable on a
fleet. Torch-free.
"""

from __future__ import annotations

import dataclasses

from ..assign import Device
from ..plan import Artifact, PlanError, SplitPlan, SubModelEntry

FULL = "full"


def unsplit_plan(plan: SplitPlan, device: str, devices: list[Device] | None = None) -> SplitPlan:
    """``plan``'s unsplit model alone on ``device`` (one of ``devices``, default the plan's)."""
    devices = list(devices or plan.devices)
    if device not in {d.name for d in devices}:
        devices.append(Device(device, memory_mb=1e9))
    artifacts = {target: Artifact(**record) for target, record in plan.model.get("artifacts", {}).items()}
    if not artifacts:
        raise PlanError(f"{plan.directory}: the plan keeps no unsplit model (model.artifacts is empty)")
    classes = list(range(len(plan.classes)))
    entry = SubModelEntry(FULL, classes, len(classes), int(plan.model.get("params", 0)),
                          float(plan.model.get("gflops", 0.0)), artifacts)
    return dataclasses.replace(plan, submodels=[entry], devices=devices, assignment={FULL: device},
                               fusion={"identity": True, "input_dim": len(classes), "feature_order": [FULL]},
                               placement={})
