"""``load(path)``: pick the runtime for an artifact by its type."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from edgevit.errors import ArtifactError, EdgeVitError

from .base import Runtime

# artifact suffix -> (artifact kind, runtimes that can run it, best first)
ARTIFACT_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".onnx": ("onnx", ("onnxruntime",)),
    ".tflite": ("tflite", ("litert",)),
    ".mlpackage": ("coreml", ("coreml", "reference")),
    ".mlmodel": ("coreml", ("coreml", "reference")),
    ".pt2": ("torch", ("torch",)),
}
# runtime name -> "module:class"
RUNTIMES: dict[str, str] = {
    "onnxruntime": "edgevit.runtimes.onnxruntime:OnnxRuntime",
    "litert": "edgevit.runtimes.litert:LiteRtRuntime",
    "coreml": "edgevit.runtimes.coreml:CoreMLRuntime",
    "reference": "edgevit.runtimes.coreml:CoreMLRuntime.reference",  # numpy ML Program interpreter
    "torch": "edgevit.runtimes.torch:TorchRuntime.from_file",
}


def artifact_kind(path: str | Path) -> str:
    """``"onnx"``, ``"tflite"``, ``"coreml"`` or ``"torch"``, from the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in ARTIFACT_KINDS:
        known = ", ".join(ARTIFACT_KINDS)
        raise ArtifactError(f"{path}: unknown artifact type {suffix or '(no suffix)'!r}; expected one of {known}")
    return ARTIFACT_KINDS[suffix][0]


def load(path: str | Path, *, runtime: str = "auto", threads: int | None = None, **options: Any) -> Runtime:
    """Load an artifact with the runtime that fits it (or the one named by ``runtime``)."""
    path = Path(path)
    kind = artifact_kind(path)
    if not path.exists():
        raise ArtifactError(f"artifact not found: {path}")
    candidates = ARTIFACT_KINDS[path.suffix.lower()][1]
    name = candidates[0] if runtime == "auto" else runtime
    if name not in RUNTIMES:
        raise EdgeVitError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)} or auto")
    if name not in candidates:
        raise EdgeVitError(f"runtime {name!r} cannot run {kind} artifacts ({path.name})")
    module_name, _, attr = RUNTIMES[name].partition(":")
    factory: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        factory = getattr(factory, part)
    return factory(path, threads=threads, **options)
