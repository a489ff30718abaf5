"""Read checkpoint files and load them strictly into a model.

Handles the wrappers training scripts save (``model_ema``, ``model``, ``state_dict``,
DDP's ``module.`` prefix) and delegates key renaming to the family module's
``remap_checkpoint(state_dict, layout)`` (official repository layout, timm layout, ...).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ArtifactError, UnsupportedModelError, first_line
from .spec import ModelSpec

_WRAPPER_KEYS = ("model_ema", "model", "state_dict", "module")
_LIST_LIMIT = 6
# buffers computed from the architecture alone: a checkpoint may omit them
_DERIVED_BUFFERS = ("num_batches_tracked", "relative_position_index", "attn_mask")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensor dictionary inside a checkpoint file (.pth/.pt/.bin or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise ArtifactError(f"{path}: reading .safetensors needs 'pip install safetensors'") from None
    except Exception as exc:  # corrupt, truncated, or pickled objects we refuse to run
        raise ArtifactError(f"cannot read weights file {path}: {first_line(exc)}") from None
    while isinstance(obj, dict):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArtifactError(f"{path} holds no state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    more = f" (+{len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else ""
    return f"{len(keys)}: {shown}{more}"


def load_weights(model: nn.Module, spec: ModelSpec, path: str | Path, layout: str = "auto") -> str:
    """Load ``path`` into ``model`` strictly; returns the checkpoint layout detected."""
    state = read_state_dict(path)
    builder_module = spec.builder.partition(":")[0] if isinstance(spec.builder, str) else None
    remap = getattr(importlib.import_module(builder_module), "remap_checkpoint", None) if builder_module else None
    if remap is not None:
        state, layout = remap(state, layout)
    elif layout not in ("auto", "edgevit"):
        raise UnsupportedModelError(f"{spec.name} knows no checkpoint layout {layout!r}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_DERIVED_BUFFERS)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({_listing(missing)})")
    if unexpected:
        problems.append(f"unexpected keys ({_listing(unexpected)})")
    if mismatched:
        problems.append(f"shape mismatches, checkpoint vs model ({_listing(mismatched)})")
    if problems:
        raise UnsupportedModelError(
            f"{path} does not fit {spec.name} (layout {layout}): " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=False)
    return layout
