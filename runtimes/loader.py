"""``load(path)``: pick the runtime for an artifact by its type."""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

from edgevit.errors import ArtifactError, EdgeVitError

from .base import Runtime

MAX_INPUT_BYTES = 1 << 30  # one input tensor; a 1x3x4096x4096 float32 image is 192 MiB

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


def load(path: str | Path, *, runtime: str = "auto", threads: int | None = None, integrity_check: bool = True,
         **options: Any) -> Runtime:
    """Load an artifact with the runtime that fits it (or the one named by ``runtime``).

    An artifact whose content no longer matches the digest recorded at export is refused
    (``ArtifactError``) unless ``integrity_check`` is False; ``rt.integrity`` says which.
    """
    path = Path(path)
    kind = artifact_kind(path)
    if not os.path.lexists(path):
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
    options = {key: value for key, value in options.items() if value is not None}
    accepted = inspect.signature(factory).parameters
    for key in options:
        if key not in accepted:
            what = "execution providers apply to ONNX artifacts only" if key == "providers" else \
                f"option {key!r} does not apply to the {name} runtime"
            raise EdgeVitError(f"{what} ({path.name})")
    loaded = factory(path, threads=threads, **options)
    for tensor in loaded.inputs:  # benchmarks, parity checks and images are made at this size
        if (size := tensor.nbytes()) > MAX_INPUT_BYTES:
            raise ArtifactError(f"{path} declares an input {tensor.describe()} of {size} bytes, more "
                                f"than edgevit allocates for one input ({MAX_INPUT_BYTES} bytes)")
    integrity = loaded.integrity
    if integrity_check and integrity is not None and integrity.status == "modified":
        raise ArtifactError(f"{path} changed after edgevit exported and verified it: its content digest "
                            f"{integrity.actual[:16]}... is not the recorded {str(integrity.recorded)[:16]}... "
                            "(export it again, or pass --no-integrity-check to use it anyway)")
    return loaded
