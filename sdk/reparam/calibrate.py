"""Re-estimate BatchNorm statistics with every weight frozen (SLAB's last training phase).

After progressive training the RepBN statistics were gathered while LayerNorm still
contributed; SLAB fixes that by running the training data through the frozen model with
only the BatchNorm layers in training mode. Running statistics are recomputed from
scratch as an exact average over the batches seen (``momentum=None``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn


def _batch_input(batch: Any) -> torch.Tensor:
    """The model input of a loader batch: a tensor, or the first item of (x, y, ...)."""
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"a batch must be a tensor or a (inputs, ...) tuple, got {type(batch).__name__}")
    return batch


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], *, max_batches: Optional[int] = None,
                          progress: Optional[Callable[[int], None]] = None) -> int:
    """Recompute every BatchNorm's running mean/var on ``batches``; returns batches used.

    Weights are not touched (gradients off). Every other module runs in eval mode, so a
    PRepBN uses its RepBN branch only, as at deployment. The model is left in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("the model has no BatchNorm layer to recalibrate")
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch seen
        m.train()
    used = 0
    try:
        with torch.no_grad():
            for batch in batches:
                if max_batches is not None and used >= max_batches:
                    break
                model(_batch_input(batch))
                used += 1
                if progress is not None:
                    progress(used)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    if used == 0:
        raise ValueError("no batches were given to recalibrate BatchNorm statistics")
    return used
