"""TFLite Model Metadata (``TFLITE_METADATA``): what MediaPipe Tasks, the LiteRT task
library and Android Studio's ML binding read from a .tflite file.

The flatbuffer classes come from the schema's generated Python code that ships in the
``mediapipe`` package (``mediapipe.tasks.metadata.metadata_schema_py_generated``,
identifier ``M001``). The metadata says:

- the model's name, description, version and author;
- the input: an RGB image (NHWC) or a feature tensor (NCHW), with its normalization in
  the 0-255 convention the task libraries apply, ``(pixel - mean) / std``. A pixel-input
  artifact (mean/std inside the model) declares mean 0, std 1; a normalized-tensor one
  declares ImageNet-style per-channel values times 255 (MediaPipe refuses per-channel
  normalization: export with pixel input for it);
- the output: class scores (logits, or probabilities with ``--with-softmax``) and, with
  labels, the label file ``labels.txt`` as an associated file of type
  ``TENSOR_AXIS_LABELS``, packed in the zip archive appended to the flatbuffer.
"""

from __future__ import annotations

import io
import zipfile

from edgevit.artifact.input_form import InputForm
from edgevit.artifact.metadata import ArtifactMetadata
from edgevit.optional import require

LABELS_FILE = "labels.txt"
_MIN_PARSER_VERSION = "1.0.0"  # every field written here exists since schema 1.0.0
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed: the same export gives the same bytes


def _schema():
    return require("mediapipe.tasks.metadata.metadata_schema_py_generated", "to write TFLite Model Metadata")


def _stats(low: list[float], high: list[float]):
    stats = _schema().StatsT()
    stats.min, stats.max = low, high
    return stats


def _input_metadata(meta: ArtifactMetadata):
    schema = _schema()
    tensor = schema.TensorMetadataT()
    content = schema.ContentT()
    height, width = InputForm.of(meta).image_size(meta.input_shape)
    if meta.layout == "NHWC":
        tensor.name = "image"
        properties = schema.ImagePropertiesT()
        properties.colorSpace = schema.ColorSpaceType.RGB
        content.contentPropertiesType = schema.ContentProperties.ImageProperties
    else:  # channels first: not an image for the task libraries, a feature tensor
        tensor.name = "input"
        properties = schema.FeaturePropertiesT()
        content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    content.contentProperties = properties
    tensor.content = content
    if meta.image_input:
        mean, std = [0.0], [1.0]
        tensor.description = (f"RGB image {height}x{width} ({meta.layout}), float32 pixel values 0-255; "
                              f"the model applies mean {meta.mean} and std {meta.std} itself")
    else:
        mean, std = [m * 255.0 for m in meta.mean], [s * 255.0 for s in meta.std]
        tensor.description = (f"RGB image {height}x{width} ({meta.layout}), normalized: "
                              f"(pixel / 255 - {meta.mean}) / {meta.std}")
    normalization = schema.NormalizationOptionsT()
    normalization.mean, normalization.std = mean, std
    unit = schema.ProcessUnitT()
    unit.optionsType = schema.ProcessUnitOptions.NormalizationOptions
    unit.options = normalization
    tensor.processUnits = [unit]
    tensor.stats = _stats([(0.0 - m) / s for m, s in zip(mean, std)], [(255.0 - m) / s for m, s in zip(mean, std)])
    return tensor


def _output_metadata(meta: ArtifactMetadata):
    schema = _schema()
    tensor = schema.TensorMetadataT()
    probabilities = meta.output_kind == "probabilities"
    tensor.name = "probability" if probabilities else "logits"
    tensor.description = ("Probabilities of the classes (softmax)" if probabilities
                          else "Scores of the classes (logits; apply softmax for probabilities)")
    content = schema.ContentT()
    content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    content.contentProperties = schema.FeaturePropertiesT()
    tensor.content = content
    if probabilities:
        tensor.stats = _stats([0.0], [1.0])
    if meta.labels:
        labels = schema.AssociatedFileT()
        labels.name = LABELS_FILE
        labels.description = "Class labels, one per line, in class-index order"
        labels.type = schema.AssociatedFileType.TENSOR_AXIS_LABELS
        tensor.associatedFiles = [labels]
    return tensor


def standard_metadata(meta: ArtifactMetadata) -> bytes:
    """The ``TFLITE_METADATA`` buffer (an ``M001`` flatbuffer) describing ``meta``'s model."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelMetadataT()
    model.name = meta.model
    kind = "probabilities" if meta.output_kind == "probabilities" else "logits"
    model.description = (f"{meta.model} image classifier ({meta.precision}), exported and verified against "
                         f"PyTorch by edgevit; outputs {kind}")
    model.version = meta.edgevit_version
    model.author = "edgevit"
    subgraph = schema.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [_input_metadata(meta)]
    subgraph.outputTensorMetadata = [_output_metadata(meta)]
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = _MIN_PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"M001")
    return bytes(builder.Output())


def associated_files(meta: ArtifactMetadata) -> dict[str, bytes]:
    """The files the metadata names: ``labels.txt`` when the model has labels."""
    if not meta.labels:
        return {}
    return {LABELS_FILE: ("\n".join(meta.labels) + "\n").encode("utf-8")}


def append_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """``model`` followed by a zip archive of ``files`` (the metadata spec's packing: the
    flatbuffer stays readable, the archive's offsets count from the file's start)."""
    if not files:
        return model
    stream = io.BytesIO(model)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data)
    return stream.getvalue()

