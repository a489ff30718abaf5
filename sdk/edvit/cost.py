"""What a sub-model costs: work (GFLOPs per image) and the parameter budget it must fit."""

from __future__ import annotations

import re
from typing import Sequence

from ..errors import InputError

BYTES_PER_PARAM = 4  # fp32 artifacts
_MEMORY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(kb|mb|gb)\s*$", re.IGNORECASE)
_UNITS = {"kb": 1e3, "mb": 1e6, "gb": 1e9}


def gflops(module, input_shape: Sequence[int]) -> float:
    """GFLOPs (2 x multiply-adds) of one forward pass at ``input_shape``, batch 1."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, *input_shape[1:]))
    return counter.get_total_flops() / 1e9


def parse_budget(budget: float | int | str | None, full_params: int, num_submodels: int) -> tuple[int, str]:
    """The most parameters a sub-model may keep, and how the budget was given.

    ``None``: the full model's parameters / K. A float in (0, 1]: that fraction of the full
    model. An integer > 1: a parameter count. A string like ``"250KB"`` or ``"1.5MB"``:
    the fp32 weight memory (MB = 1e6 bytes).
    """
    if budget is None:
        return full_params // num_submodels, f"1/{num_submodels} of the full model"
    if isinstance(budget, str):
        match = _MEMORY.match(budget)
        if match:
            limit = float(match.group(1)) * _UNITS[match.group(2).lower()]
            return int(limit // BYTES_PER_PARAM), f"{budget.strip()} of fp32 weights"
        try:
            budget = float(budget) if "." in budget or "e" in budget.lower() else int(budget)
        except ValueError:
            raise InputError(f"budget {budget!r} is not a fraction (0.05), a parameter count (250000) "
                             f"or a memory size (1.5MB)") from None
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
        raise InputError(f"budget must be positive, got {budget!r}")
    if isinstance(budget, float) and budget <= 1:
        return int(full_params * budget), f"{budget:g} of the full model"
    return int(budget), f"{int(budget):,} parameters"
