"""``edgevit check``: where an artifact can run, accelerator by accelerator.

Each artifact kind is asked of its vendor's own analyzer where one exists: ONNX Runtime's
mobile usability checker (NNAPI, Core ML MLProgram and NeuralNetwork EPs:
:mod:`.ort_mobile`), LiteRT's model analyzer with GPU-delegate compatibility
(:mod:`.litert_gpu`). Core ML has no such tool: its packages get an op census against
what is known of the Neural Engine (:mod:`.neural_engine`), marked heuristic. None of
them runs the model on the device: they judge operators and shapes, not speed.
"""

from __future__ import annotations

from pathlib import Path

from edgevit.runtimes.loader import artifact_kind, load

from .accelerators import CheckReport
from .litert_gpu import check_tflite
from .neural_engine import check_mlpackage
from .ort_mobile import check_onnx

MOBILE_FORM_SERVES = ("NNAPI", "Core ML MLProgram")  # what --ep's mobile form is made for


def check_artifact(path: str | Path) -> CheckReport:
    """Ask each accelerator's analyzer about the artifact at ``path`` (validated first, as
    every artifact is: a corrupt or hostile file is refused before any analyzer reads it)."""
    path = Path(path)
    runtime = load(path, integrity_check=False)
    kind = artifact_kind(path)
    if kind == "onnx":
        accelerators, notes = check_onnx(path, bool(runtime.app_metadata.get("native_ops")))
        meta = runtime.metadata
        split = [a.accelerator for a in accelerators if a.accelerator in MOBILE_FORM_SERVES and a.partitions > 1]
        if split and meta is not None and (meta.form or {}).get("form") != "mobile":
            notes.append(f"{' and '.join(split)} split this file: 'edgevit export --model {meta.model} --target onnx "
                         "--ep nnapi' (or coreml) writes the mobile form, whose operators both take")
    elif kind == "tflite":
        accelerators, notes = check_tflite(path)
    else:
        accelerators, notes = check_mlpackage(runtime)
    return CheckReport(str(path), kind, accelerators, notes)
