"""ONNX Runtime backend (CPU by default; CUDA/TensorRT providers where installed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from edgevit import native_onnx
from edgevit.errors import ArtifactError, MissingDependencyError, first_line
from edgevit.metadata import METADATA_KEY, ArtifactMetadata

from .base import Runtime, TensorInfo

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("onnxruntime", "onnx", "to run .onnx artifacts") from None
    return onnxruntime


def _tensor_info(arg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorInfo(arg.name, shape, _ORT_DTYPES.get(arg.type, arg.type))


class OnnxRuntime(Runtime):
    """Runs an .onnx file with onnxruntime.InferenceSession."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        super().__init__(path)
        ort = _import_ort()
        self._ort = ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=chosen or None)
        except Exception as exc:  # InvalidProtobuf, Fail, NoSuchFile, ...
            if native_onnx.DOMAIN not in str(exc):
                raise ArtifactError(f"cannot load ONNX model {path}: {first_line(exc)}") from None
            self.session = native_onnx.session(path, options, chosen or None)  # edgevit's fused attention
        self.inputs = [_tensor_info(a) for a in self.session.get_inputs()]
        self.outputs = [_tensor_info(a) for a in self.session.get_outputs()]
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY in props:
            self.metadata = ArtifactMetadata.from_json(props[METADATA_KEY])

    def describe(self) -> str:
        return f"onnxruntime {self._ort.__version__} ({self.session.get_providers()[0]})"

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.inputs[0].name: x})[0]

    def op_census(self) -> dict[str, int]:
        try:
            import onnx
        except ImportError:
            raise MissingDependencyError("onnx", "onnx", "to list the operators of .onnx files") from None
        model = onnx.load(str(self.path), load_external_data=False)
        return dict(Counter(n.op_type for n in model.graph.node).most_common())
