"""ONNX Runtime backend (CPU by default; CUDA/TensorRT providers where installed)."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from edgevit import native_onnx
from edgevit.errors import ArtifactError, first_line
from edgevit.metadata import METADATA_KEY
from edgevit.optional import require

from .base import Runtime, TensorInfo
from .files import read_regular_file

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}
_FATAL_ONLY = 4  # onnxruntime log severity: its own error lines (with colour codes) stay off stderr
_EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"


def _import_ort():
    ort = require("onnxruntime", "to run .onnx artifacts")
    if not os.environ.get("EDGEVIT_DEBUG"):
        ort.set_default_logger_severity(_FATAL_ONLY)
    return ort


def _tensor_info(arg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    return TensorInfo(arg.name, shape, _ORT_DTYPES.get(arg.type, arg.type))


class OnnxRuntime(Runtime):
    """Runs an .onnx file with onnxruntime.InferenceSession, from the bytes edgevit read and
    digested (so ONNX Runtime never opens another file: external data is refused)."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        super().__init__(path)
        ort = _import_ort()
        self._ort = ort
        data = read_regular_file(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3 if os.environ.get("EDGEVIT_DEBUG") else _FATAL_ONLY
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available]
        # a model given as bytes resolves external data against the working directory: point
        # ONNX Runtime at an empty folder instead, so no file outside the artifact is read
        with tempfile.TemporaryDirectory(prefix="edgevit-no-external-data-") as empty:
            options.add_session_config_entry(_EXTERNAL_DATA_FOLDER, empty)
            try:
                self.session = ort.InferenceSession(data, options, providers=chosen or None)
            except Exception as exc:  # InvalidProtobuf, Fail, InvalidGraph, ...
                if "External data" in str(exc):
                    raise ArtifactError(f"cannot load ONNX model {path}: it keeps tensors in external data files, "
                                        "which edgevit does not read (export it as one file)") from None
                if native_onnx.DOMAIN not in str(exc):
                    raise ArtifactError(f"cannot load ONNX model {path}: {first_line(exc)}") from None
                self.session = native_onnx.session(path, data, options, chosen or None)  # edgevit's fused attention
        try:
            self.inputs = [_tensor_info(a) for a in self.session.get_inputs()]
            self.outputs = [_tensor_info(a) for a in self.session.get_outputs()]
            props = self.session.get_modelmeta().custom_metadata_map
        except (UnicodeDecodeError, RuntimeError) as exc:
            raise ArtifactError(f"cannot load ONNX model {path}: its names or metadata are not valid "
                                f"({first_line(exc)})") from None
        if not self.inputs or not self.outputs:
            raise ArtifactError(f"cannot load ONNX model {path}: the graph has no inputs or no outputs")
        if METADATA_KEY in props:
            self._read_metadata(props[METADATA_KEY])
        self._note_integrity([data])
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = options.log_severity_level

    def describe(self) -> str:
        return f"onnxruntime {self._ort.__version__} ({self.session.get_providers()[0]})"

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.inputs[0].name: x}, self._run_options)[0]

    def op_census(self) -> dict[str, int]:
        onnx = require("onnx", "to list the operators of .onnx files")
        try:
            model = onnx.load_model_from_string(read_regular_file(self.path))
        except Exception as exc:  # DecodeError
            raise ArtifactError(f"cannot read the graph of {self.path}: {first_line(exc)}") from None
        return dict(Counter(n.op_type for n in model.graph.node).most_common())
