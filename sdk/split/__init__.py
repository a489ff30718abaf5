"""ED-ViT: split a vision transformer into class-wise sub-models for several edge devices.

So far: device assignment (:mod:`.assign`). The split, pruning and fusion steps follow.
"""

from .assign import Device, Placement, PlacementError, SubModelCost, assign

__all__ = ["Device", "Placement", "PlacementError", "SubModelCost", "assign"]
