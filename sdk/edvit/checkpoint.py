"""Checkpoints of trained ViTs that rebuild themselves: model name, configuration
(image size, patch size, classes), class names, input normalization and weights.
Written atomically; read with ``weights_only`` (no pickled code runs)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ArtifactError, first_line
from ..models.factory import create_model
from ..paths import ensure_writable_dir, publish, staged_path
from .data import Dataset

CHECKPOINT_FORMAT = "edgevit.trained/1"


def save_checkpoint(model: nn.Module, path, data: Dataset) -> None:
    """Save a trained registered model with what rebuilds it (name, config) and what it was
    trained on (classes, normalization, the data's train/test split seed)."""
    final = Path(path)
    ensure_writable_dir(final.parent)
    payload = {
        "format": CHECKPOINT_FORMAT, "model": model.edgevit_name,
        "config": {**getattr(model, "edgevit_config", {}), "num_classes": data.num_classes},
        "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std), "data_seed": data.seed,
        "state_dict": model.state_dict(),
    }
    with staged_path(final) as staged:
        torch.save(payload, staged)
        publish(staged, final)


def load_checkpoint(path) -> tuple[nn.Module, dict]:
    """A model saved by :func:`save_checkpoint`, and its record (classes, mean, std, ...)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"weights file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"cannot read weights file {path}: {first_line(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{path} is not an edgevit training checkpoint (edgevit train writes those); split "
                            f"other checkpoints from Python: edgevit.split(edgevit.create_model(name, weights=...), ...)")
    config = dict(payload["config"])
    num_classes = config.pop("num_classes")
    model = create_model(payload["model"], num_classes=num_classes, **config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{path} does not fit {payload['model']}: {first_line(exc)}") from None
    return model.eval(), payload
