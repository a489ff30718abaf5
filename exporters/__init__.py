"""Exporters: one module per target, each with the same two entry points.

``convert(request, dest)`` writes the artifact for ``request`` at ``dest`` (a temporary
path the pipeline later renames into place), and ``write_metadata(path, metadata)``
stores the artifact's :class:`~edgevit.artifact.metadata.ArtifactMetadata` inside it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from edgevit.artifact.input_form import InputForm
from edgevit.errors import EdgeVitError

# target -> (module, artifact suffix)
TARGETS: dict[str, tuple[str, str]] = {
    "onnx": ("edgevit.exporters.onnx", ".onnx"),
    "coreml": ("edgevit.exporters.coreml", ".mlpackage"),
    "tflite": ("edgevit.exporters.tflite", ".tflite"),
}
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class ExportRequest:
    """Everything an exporter needs; built once by the pipeline and shared by targets."""

    model: Any  # torch.nn.Module in eval mode, taking the input in ``form``
    program: Any  # torch.export.ExportedProgram of ``model`` at ``example``'s static shape
    example: Any  # torch.Tensor in ``form``: (1, C, H, W) or (1, H, W, C)
    model_name: str
    precision: str = "fp32"
    dynamic_batch: bool = False
    form: InputForm = field(default_factory=InputForm)  # layout and value range of the input
    labels: list[str] | None = None
    input_name: str = "input"
    output_name: str = "logits"
    output_kind: str = "logits"  # or "probabilities" (the model ends in a softmax)
    options: dict[str, Any] = field(default_factory=dict)


def resolve_targets(target: str) -> list[str]:
    """``"all"`` or one target name -> list of target names (unknown names are errors)."""
    if target == "all":
        return list(TARGETS)
    if target not in TARGETS:
        raise EdgeVitError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)} or all")
    return [target]


def exporter_module(target: str) -> ModuleType:
    """The exporter module for ``target`` (imported on demand)."""
    resolve_targets(target)
    return importlib.import_module(TARGETS[target][0])


def artifact_suffix(target: str) -> str:
    resolve_targets(target)
    return TARGETS[target][1]
