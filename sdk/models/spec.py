"""What edgevit knows about one model (:class:`ModelSpec`), readable without importing torch.

A spec names its builder as ``"module:function"`` so that listing models (``edgevit
models``, the device profile) never imports torch; the family module is imported only when
a model is actually created.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PaperFigures:
    """What the model's paper reports (ImageNet-1k, at the paper's input size)."""

    params_m: float
    gmacs: float | None = None
    top1: float | None = None
    source: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """Everything edgevit knows about one registered model."""

    name: str
    family: str
    builder: str | Callable[..., Any]  # "package.module:function" or a callable
    config: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int, int] = (3, 224, 224)  # (C, H, W)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    num_classes: int = 1000
    size_multiple: int = 32  # input height/width must be a multiple of this
    fixed_size: bool = False  # learned position tables: only ``input_size`` works
    paper: PaperFigures | None = None
    description: str = ""
    caveat: str = ""  # what a user must know before trusting the paper figures (e.g. a reconstruction)

    def resolve_builder(self) -> Callable[..., Any]:
        """Import and return the builder function."""
        if callable(self.builder):
            return self.builder
        module_name, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module_name), attr)
