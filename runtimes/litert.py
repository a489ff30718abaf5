"""LiteRT backend: ``ai_edge_litert``, falling back to ``tflite_runtime``, then ``tensorflow.lite``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from edgevit.artifact.metadata import METADATA_KEY
from edgevit.errors import ArtifactError, MissingDependencyError, first_line
from edgevit.quiet import quiet_converters

from .base import Runtime, TensorInfo
from .files import read_regular_file
from .tflite_format import STANDARD_METADATA_KEY, packed_files, read_metadata_entries

_INTERPRETERS = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)


def find_interpreter() -> tuple[type, str]:
    """The first importable TFLite Interpreter class and the package that provides it."""
    import importlib

    for module_name, package in _INTERPRETERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return module.Interpreter, package
    raise MissingDependencyError("ai-edge-litert (or tflite-runtime)", "tflite", "to run .tflite artifacts")


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


class LiteRtRuntime(Runtime):
    """Runs a .tflite file with the LiteRT (TFLite) interpreter on the CPU."""

    backend = "litert"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__(path)
        interpreter_cls, self.package = find_interpreter()
        data = read_regular_file(path)
        entries = read_metadata_entries(data, str(path))  # also rejects truncated/corrupt files early
        try:
            with quiet_converters():  # the interpreter logs its delegate choice to stderr
                self.interpreter = interpreter_cls(model_content=data, num_threads=threads or None)
                self.interpreter.allocate_tensors()
            inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
            self.inputs = [self._info(d) for d in inputs]
            self.outputs = [self._info(d) for d in outputs]
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
            raise ArtifactError(f"cannot load TFLite model {path}: {first_line(exc)}") from None
        if not inputs or not outputs:
            raise ArtifactError(f"cannot load TFLite model {path}: the graph has no inputs or no outputs")
        self._input, self._output = inputs[0], outputs[0]
        if METADATA_KEY in entries:
            self._read_metadata(entries[METADATA_KEY])
        if STANDARD_METADATA_KEY in entries:
            self.app_metadata = {"standard": STANDARD_METADATA_KEY, "packed_files": packed_files(data)}
        self._note_integrity([data])

    @staticmethod
    def _info(detail: dict) -> TensorInfo:
        signature = detail.get("shape_signature", detail["shape"])
        shape = tuple(None if int(d) < 0 else int(d) for d in signature)
        return TensorInfo(detail["name"], shape, np.dtype(detail["dtype"]).name)

    def describe(self) -> str:
        return f"{self.package} {_version(self.package)} (CPU)"

    def check_input(self, x):
        """Float input for an int8-input model (``--int8-io``) is quantized with the
        tensor's own scale and zero point, as an app would; integer input goes as it is."""
        scale, zero = self._input.get("quantization", (0.0, 0))
        if scale and isinstance(x, np.ndarray) and x.dtype == np.float32 and np.isfinite(x).all():
            info = np.iinfo(np.dtype(self.inputs[0].dtype))
            x = np.clip(np.rint(x / scale) + zero, info.min, info.max).astype(info.dtype)
        return super().check_input(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._input["index"], x)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._output["index"]).copy()
        scale, zero = self._output.get("quantization", (0.0, 0))
        if scale and np.issubdtype(out.dtype, np.integer):  # an int8 output: dequantized, as an app would
            out = (out.astype(np.float32) - zero) * np.float32(scale)
        return out

    def op_census(self) -> dict[str, int]:
        try:
            ops = self.interpreter._get_ops_details()  # public API has no op listing
        except (ValueError, RuntimeError) as exc:  # names that are not UTF-8, unknown op codes
            raise ArtifactError(f"cannot list the operators of {self.path}: {first_line(exc)}") from None
        return dict(Counter(op["op_name"] for op in ops).most_common())
