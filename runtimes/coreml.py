"""Core ML backend: Core ML itself on macOS; edgevit's numpy reference interpreter of
the ML Program elsewhere (or anywhere with ``runtime="reference"``)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

from edgevit.artifact.metadata import METADATA_KEY
from edgevit.errors import ArtifactError, UnsupportedOperationError
from edgevit.optional import require
from edgevit.quiet import quiet_converters

from .base import Runtime, TensorInfo
from .mil_program import WeightFile, decode_value
from .mil_reference import MilInterpreter
from .mlpackage import read_artifact

_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32"}
_GRAYSCALE, _RGB = 10, 20  # ImageFeatureType.ColorSpace


def import_coremltools():
    """coremltools, imported quietly (it warns about untested torch/sklearn versions)."""
    with quiet_converters():
        return require("coremltools", "for Core ML artifacts")


def _feature_info(feature) -> TensorInfo:
    kind = feature.type.WhichOneof("Type")
    if kind == "multiArrayType":
        arr = feature.type.multiArrayType
        return TensorInfo(feature.name, tuple(int(d) for d in arr.shape), _ARRAY_DTYPES.get(arr.dataType, "?"))
    if kind == "imageType":
        img = feature.type.imageType
        channels = 1 if img.colorSpace == _GRAYSCALE else 3
        return TensorInfo(feature.name, (1, channels, int(img.height), int(img.width)), "float32", image=True)
    return TensorInfo(feature.name, (), kind or "?")


class CoreMLRuntime(Runtime):
    """Loads an .mlpackage; runs it with Core ML on macOS, else with the reference interpreter."""

    backend = "coreml"

    def __init__(self, path: Path, threads: int | None = None, compute_units: str = "ALL",
                 reference: bool | None = None) -> None:
        super().__init__(path)
        ct = import_coremltools()
        self._ct = ct
        artifact = read_artifact(Path(path), ct.proto.Model_pb2.Model)
        self.spec = artifact.spec
        weights = WeightFile(Path(path), artifact.model_dir)  # read once: checked here, then interpreted
        self._check_weights(weights)
        description = self.spec.description
        self.inputs = [_feature_info(f) for f in description.input]
        self.outputs = [_feature_info(f) for f in description.output]
        self.classes = self._classifier_classes(weights)
        if self.classes is not None:  # run() answers the scores dictionary, as a row in class order
            scores = description.predictedProbabilitiesName
            self.outputs = [TensorInfo(scores, (1, len(self.classes)), "dictionary"),
                            *(o for o in self.outputs if o.name != scores)]
            self.app_metadata = {"classifier": len(self.classes), "label_output": description.predictedFeatureName}
        if self.inputs[0].image:
            self.app_metadata["image_input"] = self.inputs[0].name
        if not self.inputs or not self.outputs:
            raise ArtifactError(f"cannot load Core ML package {path}: it declares no inputs or no outputs")
        meta = dict(description.metadata.userDefined)
        if METADATA_KEY in meta:
            self._read_metadata(meta[METADATA_KEY])
        self._note_integrity([artifact.spec_bytes, *weights.contents()])
        self._model = None
        self._interpreter = None
        self.uses_reference = sys.platform != "darwin" if reference is None else reference
        image = self.inputs[0].image
        if not self.uses_reference:
            self._model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        elif self.spec.WhichOneof("Type") != "mlProgram":
            self.cannot_run_reason = "the reference interpreter runs ML Programs only; this model needs Core ML (macOS)"
        elif image and description.input[0].type.imageType.colorSpace != _RGB:
            self.cannot_run_reason = "the reference interpreter takes RGB image inputs only"
        else:
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
        """What runs the program first (the bench table shows that part), then the details."""
        tools = f"coremltools {self._ct.__version__}"
        if self._model is not None:
            return f"Core ML ({tools})"
        if self._interpreter is not None:
            return f"edgevit reference interpreter (numpy, ML Program opset {self._interpreter.opset}; {tools})"
        return f"not runnable here ({tools} reads the spec only)"

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._interpreter is not None:
            out = self._interpreter.run({self.inputs[0].name: x})
        else:
            feed: object = x
            if self.inputs[0].image:  # Core ML takes an image as a PIL image
                from PIL import Image

                feed = Image.fromarray(np.clip(x[0].transpose(1, 2, 0), 0, 255).astype(np.uint8).squeeze())
            out = self._model.predict({self.inputs[0].name: feed})
        first = out[self.outputs[0].name]
        if self.classes is not None:
            return np.array([[first[c] for c in self.classes]], dtype=np.float64)
        return np.asarray(first)

    def _classifier_classes(self, weights: WeightFile) -> list | None:
        """The classes of a classifier (its program's ``classify`` op), in score order; None
        for a model without class outputs."""
        if not self.spec.description.predictedProbabilitiesName:
            return None
        for op in self.operations():
            if op.type == "classify" and "classes" in op.inputs and len(op.inputs["classes"].arguments) == 1:
                arg = op.inputs["classes"].arguments[0]
                try:
                    classes = decode_value(arg.value, weights) if not arg.name else None
                except (UnsupportedOperationError, ValueError, TypeError) as exc:
                    raise ArtifactError(f"{self.path}: its classifier's classes cannot be read ({exc})") from None
                if isinstance(classes, list) and classes:
                    return classes
        return None

    def operations(self) -> list:
        """The MIL program's operations (protobuf), in program order, nested blocks after their op."""
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
        return dict(Counter(op.type for op in self.operations()).most_common())

    def _check_weights(self, weights: WeightFile) -> None:
        """Every weight blob the program references (in attributes and in inputs) lies whole
        inside a weight file of the package; after this, ``weights`` holds every file it reads."""
        for op in self.operations():
            values = [*op.attributes.values(), *(arg.value for binding in op.inputs.values()
                                                 for arg in binding.arguments if not arg.name)]
            for value in values:
                if value.WhichOneof("value") == "blobFileValue":
                    weights.blob(value.blobFileValue.fileName, value.blobFileValue.offset)
