"""Core ML backend: Core ML itself on macOS; edgevit's numpy reference interpreter of
the ML Program elsewhere (or anywhere with ``runtime="reference"``)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

from edgevit.errors import ArtifactError, EdgeVitError, MissingDependencyError, UnsupportedOperationError, first_line
from edgevit.metadata import METADATA_KEY, ArtifactMetadata

from .base import Runtime, TensorInfo
from .mil_program import WeightFile

_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32"}


def import_coremltools():
    """coremltools, imported quietly (it warns about untested torch/sklearn versions)."""
    from edgevit.quiet import quiet_converters

    try:
        with quiet_converters():
            import coremltools
    except ImportError:
        raise MissingDependencyError("coremltools", "coreml", "for Core ML artifacts") from None
    return coremltools


def _feature_info(feature) -> TensorInfo:
    kind = feature.type.WhichOneof("Type")
    if kind == "multiArrayType":
        arr = feature.type.multiArrayType
        return TensorInfo(feature.name, tuple(int(d) for d in arr.shape), _ARRAY_DTYPES.get(arr.dataType, "?"))
    if kind == "imageType":
        img = feature.type.imageType
        return TensorInfo(feature.name, (1, 3, int(img.height), int(img.width)), "image")
    return TensorInfo(feature.name, (), kind or "?")


class CoreMLRuntime(Runtime):
    """Loads an .mlpackage; runs it with Core ML on macOS, else with the reference interpreter."""

    backend = "coreml"

    def __init__(self, path: Path, threads: int | None = None, compute_units: str = "ALL",
                 reference: bool | None = None) -> None:
        super().__init__(path)
        ct = import_coremltools()
        self._ct = ct
        try:
            self.spec = ct.utils.load_spec(str(path))
        except Exception as exc:  # DecodeError, RuntimeError (manifest), FileNotFoundError
            raise ArtifactError(f"cannot load Core ML package {path}: {first_line(exc)}") from None
        weights = WeightFile(Path(path))  # read once: checked here, then used by the interpreter
        self._check_weights(weights)
        description = self.spec.description
        self.inputs = [_feature_info(f) for f in description.input]
        self.outputs = [_feature_info(f) for f in description.output]
        meta = dict(description.metadata.userDefined)
        if METADATA_KEY in meta:
            self.metadata = ArtifactMetadata.from_json(meta[METADATA_KEY])
        self._model = None
        self._interpreter = None
        self.uses_reference = sys.platform != "darwin" if reference is None else reference
        if not self.uses_reference:
            self._model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        elif self.spec.WhichOneof("Type") != "mlProgram":
            self.cannot_run_reason = "the reference interpreter runs ML Programs only; this model needs Core ML (macOS)"
        elif self.inputs and self.inputs[0].dtype == "image":
            self.cannot_run_reason = "image inputs are decoded by Core ML itself (macOS); export without --image-input"
        else:
            from .mil_reference import MilInterpreter

            try:
                self._interpreter = MilInterpreter(self.spec, Path(path), weights)
            except UnsupportedOperationError as exc:
                self.cannot_run_reason = str(exc)

    @classmethod
    def reference(cls, path: Path, threads: int | None = None, **options) -> "CoreMLRuntime":
        """Always the reference interpreter, also on macOS (``runtime="reference"``)."""
        return cls(path, threads=threads, reference=True, **options)

    @property
    def can_run(self) -> bool:
        return self._model is not None or self._interpreter is not None

    def describe(self) -> str:
        if self._model is not None:
            where = "Core ML"
        elif self._interpreter is not None:
            where = f"edgevit reference interpreter, numpy, opset {self._interpreter.opset}"
        else:
            where = "spec only: it cannot be run here"
        return f"coremltools {self._ct.__version__} ({where})"

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._interpreter is not None:
            return np.asarray(self._interpreter.run({self.inputs[0].name: x})[self._interpreter.output_names[0]])
        if self._model is None:
            raise EdgeVitError(f"{Path(self.path).name} cannot be run here: {self.cannot_run_reason}")
        out = self._model.predict({self.inputs[0].name: x})
        return np.asarray(out[self.outputs[0].name])

    def _operations(self):
        if self.spec.WhichOneof("Type") != "mlProgram":
            return []
        ops = []
        for function in self.spec.mlProgram.functions.values():
            stack = list(function.block_specializations.values())
            while stack:
                block = stack.pop()
                for op in block.operations:
                    ops.append(op)
                    stack.extend(op.blocks)
        return ops

    def op_census(self) -> dict[str, int]:
        return dict(Counter(op.type for op in self._operations()).most_common())

    def _check_weights(self, weights: WeightFile) -> None:
        """Every weight blob the program references lies whole inside its weight file."""
        for op in self._operations():
            for value in op.attributes.values():
                if value.WhichOneof("value") == "blobFileValue":
                    weights.blob(value.blobFileValue.fileName, value.blobFileValue.offset)
