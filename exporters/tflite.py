"""TFLite exporter: litert-torch (no TensorFlow), fp16 weights via ai-edge-quantizer."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from edgevit.artifact.metadata import METADATA_KEY, ArtifactMetadata
from edgevit.errors import ExportError, first_line
from edgevit.int8.guard import Int8Plan
from edgevit.int8.sensitivity import weight_layers
from edgevit.optional import require
from edgevit.quiet import quiet_converters
from edgevit.runtimes.litert import find_interpreter
from edgevit.runtimes.tflite_format import STANDARD_METADATA_KEY

from . import ExportRequest
from .tflite_metadata import append_files, associated_files, standard_metadata

INT8_MODES = ("full", "dynamic")  # static int8 (weights and activations), or dynamic range
# Only the layers holding weights are quantized (docs/int8.md has the measurements): the
# stock all-ops recipe ran 2.25x slower than fp32 on edgenext (XNNPACK leaves int8 LayerNorm
# pieces, GELU, SOFTMAX and DIV to slow reference kernels) and its int8 DIV in XCA's L2 norm
# fails at run time.
INT8_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
INT8_FLOAT_BY_DEFAULT = ("LayerNorm (MEAN, SQUARED_DIFFERENCE, RSQRT)", "SOFTMAX", "GELU", "ADD (residual)", "MUL",
                         "DIV/SQRT (XCA's L2 norm and temperature)", "BATCH_MATMUL (attention)")


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


def quantize(source: Path, dest: Path, plan: Int8Plan, request: ExportRequest) -> None:
    """int8 through ai-edge-quantizer: ``full`` is static int8 (weights per channel,
    symmetric; activations per tensor from the calibration samples) on the weight layers,
    float input and output unless ``plan.int8_io``; ``dynamic`` is dynamic range (int8
    weights, activations quantized on the fly). ``plan.keep_float`` layers stay float."""
    require("ai_edge_quantizer", "to quantize TFLite to int8")
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    named = dest.with_name("named-" + source.name)
    outputs, constant_input = _name_output_layers(source, named)
    try:
        with quiet_converters():
            q = quantizer.Quantizer(str(named))
            for op in INT8_OPS + (("INPUT", "OUTPUT") if plan.int8_io else ()):
                if plan.mode == "full":
                    q.add_static_config(regex=".*", operation_name=getattr(ops, op), activation_num_bits=8,
                                        weight_num_bits=8,
                                        weight_granularity=qtyping.QuantGranularity.CHANNELWISE)
                else:
                    q.add_dynamic_config(regex=".*", operation_name=getattr(ops, op), num_bits=8)
            for regex in constant_input:  # stored int8, computed in float
                q.update_quantization_recipe(regex=regex, operation_name=ops.ALL_SUPPORTED,
                                             algorithm_key=AlgorithmName.NO_QUANTIZE)
                q.add_weight_only_config(regex=regex, operation_name=ops.ALL_SUPPORTED, num_bits=8)
            for regex in _layer_scopes(request, plan.keep_float):
                q.update_quantization_recipe(regex=regex, operation_name=ops.ALL_SUPPORTED,
                                             algorithm_key=AlgorithmName.NO_QUANTIZE)
            calibration = None
            if plan.mode == "full":
                key, argument = _signature(source)
                calibration = q.calibrate({key: [{argument: x[None]} for x in plan.calibration]}, num_threads=1)
            data = bytes(q.quantize(calibration, enable_progress_report=False).quantized_model)
    except Exception as exc:
        raise ExportError(f"ai-edge-quantizer could not quantize {source.name}: {first_line(exc)}") from None
    finally:
        named.unlink(missing_ok=True)
    dest.write_bytes(_short_tensor_names(data, outputs))


def _signature(path: Path) -> tuple[str, str]:
    """(signature key, input argument name) of a converted model."""
    interpreter = find_interpreter()[0](model_path=str(path))
    key, signature = next(iter(interpreter.get_signature_list().items()))
    return key, signature["inputs"][0]


def _constant_input_scopes(model) -> list[str]:
    """Weight layers whose input is a constant (the converter folded it, e.g. EdgeNeXt's
    Fourier position features): quantizing that input as an activation breaks the model;
    both are stored int8 and dequantized to float instead (weight-only)."""
    import re

    graph = model.subgraphs[0]
    return [re.escape(_text(graph.tensors[op.outputs[0]].name)) + ";" for op in _weight_ops(model)
            if model.buffers[graph.tensors[op.inputs[0]].buffer].data is not None]


def _weight_ops(model) -> list:
    """The FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D operators of the main graph."""
    from ai_edge_litert import schema_py_generated as schema

    codes = {getattr(schema.BuiltinOperator, name) for name in INT8_OPS}
    operator_codes = model.operatorCodes
    return [op for op in model.subgraphs[0].operators
            if max(operator_codes[op.opcodeIndex].builtinCode, operator_codes[op.opcodeIndex].deprecatedBuiltinCode)
            in codes]


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else name


def _layer_scopes(request: ExportRequest, names: tuple[str, ...]) -> list[str]:
    """Regexes for the ops of the layers ``names`` (torch.export node names): litert-torch
    names an op's outputs after its module path, ``<class>_<attribute>`` per level (module
    lists leave no level of their own), then ``;k``."""
    import re

    from torch import nn

    if not names:
        return []
    paths = weight_layers(request.program)
    scopes = []
    for name in names:
        module, parts = request.model, [f"{type(request.model).__module__}.{type(request.model).__qualname__}"]
        for attribute in paths[name].split("."):
            child = getattr(module, attribute) if not attribute.isdigit() else module[int(attribute)]
            if not isinstance(child, nn.ModuleList):
                parts.append(f"{type(child).__module__}.{type(child).__qualname__}_{attribute}")
            module = child
        scopes.append(re.escape("/".join(parts)) + ";")
    return scopes


def write_metadata(path: Path, metadata: ArtifactMetadata) -> None:
    """Store ``metadata`` in the model's ``metadata`` table under the name ``edgevit``, beside
    the standard TFLite Model Metadata (``TFLITE_METADATA``) and its packed label file."""
    from ai_edge_litert import schema_py_generated as schema

    raw = path.read_bytes()
    model = _unpack(raw)
    payloads = {METADATA_KEY: metadata.to_json().encode("utf-8"), STANDARD_METADATA_KEY: standard_metadata(metadata)}
    entries = [m for m in (model.metadata or [])
               if _text(m.name) not in payloads]
    for name, payload in payloads.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(payload, dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        entries.append(entry)
    model.metadata = entries
    tmp = path.with_name(path.name + ".meta-tmp")
    tmp.write_bytes(append_files(_pack(model, len(raw)), associated_files(metadata)))
    os.replace(tmp, path)


def _unpack(raw: bytes):
    """The model as schema objects, with buffers stored after the flatbuffer pulled inline."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
    for buf in model.buffers:
        if buf.offset and buf.offset > 1:
            buf.data = np.frombuffer(raw[buf.offset: buf.offset + buf.size], dtype=np.uint8)
            buf.offset, buf.size = 0, 0
    return model


def _pack(model, size_hint: int) -> bytes:
    """The model as a flatbuffer, equal zero-point vectors written once (:class:`_SharedZeroPoints`)."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint + 4096)
    shared: dict[bytes, int] = {}
    for graph in model.subgraphs or []:
        for tensor in graph.tensors or []:
            if tensor.quantization is not None and tensor.quantization.zeroPoint is not None:
                tensor.quantization = _SharedZeroPoints(tensor.quantization, shared)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _SharedZeroPoints:
    """A tensor's QuantizationParameters packed with its zero-point vector shared.

    LiteRT refuses a quantized tensor without one zero point per scale (an int64 each, 8 of
    the 12 bytes a weight channel costs), though symmetric weights' are all 0. FlatBuffers
    lets tables refer to one vector, so every tensor with the same zero points (all zeros of
    one channel count) points to a single copy; the schema and what the runtime reads are
    unchanged."""

    def __init__(self, params, shared: dict[bytes, int]) -> None:
        self.params, self.shared = params, shared

    def Pack(self, builder) -> int:
        from ai_edge_litert import schema_py_generated as schema

        q = self.params
        vectors = {name: builder.CreateNumpyVector(np.asarray(values, dtype))
                   for name, values, dtype in (("min", q.min, np.float32), ("max", q.max, np.float32),
                                               ("scale", q.scale, np.float32)) if values is not None}
        zero = np.asarray(q.zeroPoint, np.int64)
        key = zero.tobytes()
        if key not in self.shared:
            self.shared[key] = builder.CreateNumpyVector(zero)
        details = q.details.Pack(builder) if q.details is not None else None
        schema.QuantizationParametersStart(builder)
        for name, add in (("min", schema.QuantizationParametersAddMin), ("max", schema.QuantizationParametersAddMax),
                          ("scale", schema.QuantizationParametersAddScale)):
            if name in vectors:
                add(builder, vectors[name])
        schema.QuantizationParametersAddZeroPoint(builder, self.shared[key])
        schema.QuantizationParametersAddDetailsType(builder, q.detailsType)
        if details is not None:
            schema.QuantizationParametersAddDetails(builder, details)
        schema.QuantizationParametersAddQuantizedDimension(builder, q.quantizedDimension)
        return schema.QuantizationParametersEnd(builder)


def _name_output_layers(source: Path, dest: Path) -> tuple[list[str], list[str]]:
    """Copy ``source`` to ``dest`` with each graph output made by a weight layer named after
    that layer's weight (``...Linear_head;out``), so that the layer can be addressed by its
    scope like every other, and biases made 1-D (:func:`_flatten_biases`); return the graph
    output names, to be given back afterwards, and the scopes of the constant-input layers
    (:func:`_constant_input_scopes`)."""
    raw = source.read_bytes()
    model = _unpack(raw)
    graph = model.subgraphs[0]
    names = [_text(graph.tensors[i].name) for i in graph.outputs]
    constant_input = _constant_input_scopes(model)
    for op in _weight_ops(model):
        if op.outputs[0] in graph.outputs and len(op.inputs) > 1:
            graph.tensors[op.outputs[0]].name = _text(graph.tensors[op.inputs[1]].name) + "out"
    _flatten_biases(model)
    dest.write_bytes(_pack(model, len(raw)))
    return names, constant_input


def _flatten_biases(model) -> None:
    """Give every weight layer's constant bias its 1-D shape (channels,). An unfolded
    layer scale reaches litert-torch as ``gamma * (x W^T + b)``, which it folds into a
    FULLY_CONNECTED whose bias is ``(1, channels)``; ai-edge-quantizer then quantizes that
    bias per channel along its axis 0 (of size 1), and LiteRT refuses the tensor at load
    ("num_scales must be 1 ... but got 168"). The op reads the bias as a flat vector either
    way; a bias another op also reads is left as it is."""
    graph = model.subgraphs[0]
    readers: dict[int, int] = {}
    for op in graph.operators:
        for index in op.inputs:
            readers[index] = readers.get(index, 0) + 1
    for op in _weight_ops(model):
        if len(op.inputs) < 3 or op.inputs[2] < 0 or readers[op.inputs[2]] != 1:
            continue
        bias = graph.tensors[op.inputs[2]]
        shape = [int(d) for d in bias.shape]
        if len(shape) > 1 and model.buffers[bias.buffer].data is not None and math.prod(shape) == shape[-1]:
            bias.shape = np.array([shape[-1]], dtype=np.int32)
            bias.shapeSignature = None


def _short_tensor_names(raw: bytes, outputs: list[str]) -> bytes:
    """Inner tensors renamed ``t<index>``: litert-torch names them after their module path
    (150 bytes each, a fifth of an int8 model); inputs keep theirs, outputs get ``outputs``."""
    model = _unpack(raw)
    graph = model.subgraphs[0]
    for index, tensor in enumerate(graph.tensors):
        if index not in graph.inputs:
            tensor.name = f"t{index}"
    for index, name in zip(graph.outputs, outputs):
        graph.tensors[index].name = name
    return _pack(model, len(raw))
