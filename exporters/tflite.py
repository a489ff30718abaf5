"""TFLite exporter: litert-torch (no TensorFlow), fp16 weights via ai-edge-quantizer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from edgevit.errors import ExportError, first_line
from edgevit.metadata import METADATA_KEY, ArtifactMetadata
from edgevit.optional import require
from edgevit.quiet import quiet_converters

from . import ExportRequest


def _import_litert_torch():
    with quiet_converters():  # its import prints native-library warnings
        return require("litert_torch", "to export TFLite")


def check_dependencies() -> None:
    """Raise MissingDependencyError unless litert-torch imports."""
    _import_litert_torch()


def convert(request: ExportRequest, dest: Path) -> None:
    """Convert ``request.model`` to a .tflite file at ``dest`` (fp32, or fp16 weights)."""
    litert_torch = _import_litert_torch()
    if request.dynamic_batch:
        raise ExportError("TFLite artifacts have a static batch: drop --dynamic-batch for tflite")
    try:
        with quiet_converters():
            edge_model = litert_torch.convert(request.model, (request.example,))
            edge_model.export(str(dest))
    except Exception as exc:
        raise ExportError(f"litert-torch could not convert {request.model_name}: {first_line(exc)}") from None
    if request.precision == "fp16":
        _cast_weights_to_fp16(dest)


def _cast_weights_to_fp16(path: Path) -> None:
    """Store conv/fully-connected weights as fp16 (dequantized on load), like TF's fp16 PTQ."""
    require("ai_edge_quantizer", "for fp16 TFLite")
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    try:
        with quiet_converters():
            q = quantizer.Quantizer(str(path))
            q.add_weight_only_config(
                regex=".*",
                operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                num_bits=16,
                algorithm_key=AlgorithmName.FLOAT_CASTING,
            )
            data = bytes(q.quantize().quantized_model)
    except Exception as exc:
        raise ExportError(f"fp16 conversion of {path.name} failed: {first_line(exc)}") from None
    path.write_bytes(data)


def write_metadata(path: Path, metadata: ArtifactMetadata) -> None:
    """Store ``metadata`` in the model's ``metadata`` table under the name ``edgevit``, beside
    the standard TFLite Model Metadata (``TFLITE_METADATA``) and its packed label file."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    from edgevit.runtimes.tflite_format import STANDARD_METADATA_KEY

    from .tflite_metadata import append_files, associated_files, standard_metadata

    raw = path.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
    for buf in model.buffers:  # pull buffers stored after the flatbuffer (offset/size) inline
        if buf.offset and buf.offset > 1:
            buf.data = np.frombuffer(raw[buf.offset: buf.offset + buf.size], dtype=np.uint8)
            buf.offset, buf.size = 0, 0
    payloads = {METADATA_KEY: metadata.to_json().encode("utf-8"), STANDARD_METADATA_KEY: standard_metadata(metadata)}
    entries = [m for m in (model.metadata or [])
               if (m.name.decode() if isinstance(m.name, bytes) else m.name) not in payloads]
    for name, payload in payloads.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(payload, dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        entries.append(entry)
    model.metadata = entries
    builder = flatbuffers.Builder(len(raw) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    tmp = path.with_name(path.name + ".meta-tmp")
    tmp.write_bytes(append_files(bytes(builder.Output()), associated_files(metadata)))
    os.replace(tmp, path)
