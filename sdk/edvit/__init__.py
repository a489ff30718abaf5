"""ED-ViT: split a vision transformer into class-wise sub-models for several edge devices.

The four steps of ED-ViT (Liu et al., arXiv 2410.11650), one module each:
:mod:`.partition` (classes into K groups), :mod:`.prune` (class-wise structured pruning)
with :mod:`.compose` (fine-tuning, fusion head), :mod:`.assign` (placement on devices);
:mod:`.splitter` runs them end to end and writes a plan (:mod:`.plan`, :mod:`.report`).
The torch-free parts (plan, devices, assignment) import without torch.
"""

from .assign import Placement, PlacementError, SubModelCost, assign
from .devices import Device, parse_devices, read_devices
from .plan import PlanError, SplitPlan, load_plan

__all__ = ["Device", "Placement", "PlacementError", "SubModelCost", "assign", "parse_devices", "read_devices",
           "PlanError", "SplitPlan", "load_plan"]
