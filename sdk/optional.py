"""Optional dependencies: import one, or fail with the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# importable module -> (package to name, edgevit extra that installs it)
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "torch": ("torch", "export"), "onnxscript": ("onnxscript", "export"), "litert_torch": ("litert-torch", "export"),
    "ai_edge_quantizer": ("ai-edge-quantizer", "export"), "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"), "ai_edge_litert": ("ai-edge-litert", "tflite"),
    "coremltools": ("coremltools", "coreml"), "matplotlib": ("matplotlib", "plot"), "ray": ("ray", "distributed"),
    "sklearn": ("scikit-learn", "split"), "yaml": ("pyyaml", "split"), "PIL": ("pillow", "onnx"),
    "onnxruntime_extensions": ("onnxruntime-extensions", "native"), "mediapipe": ("mediapipe", "export"),
}


def require(module: str, purpose: str = "") -> ModuleType:
    """``import module`` (one of OPTIONAL_MODULES), or a MissingDependencyError naming the
    package and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package, extra = OPTIONAL_MODULES[module.split(".")[0]]
        raise MissingDependencyError(package, extra, purpose) from None


def missing_module_error(exc: ImportError) -> MissingDependencyError | None:
    """The MissingDependencyError for an optional module that failed to import, else None."""
    root = (getattr(exc, "name", None) or "").split(".")[0]
    if root not in OPTIONAL_MODULES:
        return None
    package, extra = OPTIONAL_MODULES[root]
    return MissingDependencyError(package, extra)
