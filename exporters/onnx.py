"""ONNX exporter: torch.onnx's dynamo path, optimized and cleaned, metadata in metadata_props."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevit.artifact.metadata import METADATA_KEY, ArtifactMetadata
from edgevit.errors import EdgeVitError, ExportError, first_line
from edgevit.int8.guard import Int8Plan
from edgevit.native import onnx_nodes
from edgevit.optional import require
from edgevit.quiet import quiet_converters

from . import ExportRequest

DEFAULT_OPSET = 20  # 18 is the minimum; 20 (native Gelu) runs faster in ONNX Runtime
INT8_MODES = ("full", "dynamic")  # static QDQ (weights and activations), or dynamic (weights; activations per run)
# What int8 quantizes (docs/int8.md has the measurements): the layers holding weights, i.e.
# Conv and the MatMul/Gemm of a Linear. LayerNorm, Softmax, Gelu, the residual Adds, XCA's
# ReduceL2/Div and the activation-by-activation MatMuls of attention stay float.
INT8_OP_TYPES = ("Conv", "MatMul", "Gemm")
INT8_FLOAT_BY_DEFAULT = ("LayerNormalization", "Softmax", "Gelu", "Add (residual, bias)", "Mul",
                         "ReduceL2/Div (XCA's L2 norm and temperature)", "MatMul of two activations (attention)")


def _imports():
    purpose = "to export ONNX"
    require("onnxscript", purpose)  # torch.onnx's dynamo path needs it
    return require("torch", purpose), require("onnx", purpose)


def check_dependencies() -> None:
    """Raise MissingDependencyError unless torch, onnx and onnxscript import."""
    _imports()


def convert(request: ExportRequest, dest: Path) -> None:
    """Export ``request`` to an ONNX file at ``dest`` (constants folded, dead nodes removed)."""
    torch, onnx = _imports()
    if request.precision == "fp16":
        raise EdgeVitError("the ONNX exporter writes fp32 or int8; use --precision fp32 or int8 for ONNX")
    opset = int(request.options.get("opset", DEFAULT_OPSET))
    if opset < 18:
        raise EdgeVitError(f"ONNX opset {opset} is too old: edgevit exports opset 18 or newer")
    native_ops = bool(request.options.get("native_ops"))
    program = request.program
    if request.dynamic_batch or native_ops:
        program = _trace(request, torch, native_ops)
    try:
        with quiet_converters():
            onnx_program = torch.onnx.export(
                program,
                (request.example,),
                dynamo=True,
                opset_version=opset,
                input_names=[request.input_name],
                output_names=[request.output_name],
                optimize=True,
                verbose=False,
                custom_translation_table=onnx_nodes.translation_table() if native_ops else None,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx could not export {request.model_name}: {first_line(exc)}") from None
    from onnxscript.ir.passes.common import ClearMetadataAndDocStringPass

    name_nodes_by_layer(onnx_program.model)
    # torch.onnx records a stack trace, FX name and scope on every node: about 1.3 KB a
    # node, 40% of a 1 MB model, with no effect on what it computes
    ClearMetadataAndDocStringPass()(onnx_program.model)
    model = clean_graph(onnx_program.model_proto)
    onnx.save_model(model, str(dest))


def name_nodes_by_layer(model) -> None:
    """Prefix each node's name with the module it comes from (``stages.1.blocks.0.norm/
    node_layer_norm``), from the scope torch.onnx records, so that a report (``edgevit
    check``, a profiler) can name the layer; the scope itself is then dropped."""
    import ast

    for node in model.graph.all_nodes():
        scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
        try:
            names = ast.literal_eval(scopes) if scopes else []
        except (ValueError, SyntaxError):
            continue
        layer = names[-2] if len(names) >= 2 else ""
        layer = layer[len("model."):] if layer.startswith("model.") else "" if layer == "model" else layer
        if layer and node.name:
            node.name = f"{layer}/{node.name}"


def _trace(request: ExportRequest, torch, native_ops: bool):
    """Trace again: for a dynamic batch, or with the attention as ``edgevit::`` ops (native_ops)."""
    from edgevit.native.torch_ops import attention_modules, attention_path  # torch

    if native_ops and not attention_modules(request.model):
        raise ExportError(f"{request.model_name} has no XCA, simplified linear attention or RLMHSA for --native-ops")
    example, dynamic_shapes = request.example, None
    if request.dynamic_batch:
        # a batch of 2 to trace with: torch.export specializes axes of size 1
        example = request.example.expand(2, *request.example.shape[1:]).contiguous()
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},)
    try:
        with attention_path(request.model, native_ops):
            return torch.export.export(request.model, (example,), dynamic_shapes=dynamic_shapes)
    except Exception as exc:
        what = "with a dynamic batch" if request.dynamic_batch else "with native attention ops"
        raise ExportError(f"{request.model_name} cannot be exported {what}: {first_line(exc)}") from None


def clean_graph(model):
    """Fold constants and drop dead nodes/initializers (onnxscript's optimizer), then check."""
    import onnx
    import onnxscript.optimizer

    model = onnxscript.optimizer.optimize(model)
    onnx.checker.check_model(model)
    return model


def quantize(source: Path, dest: Path, plan: Int8Plan, request: ExportRequest) -> None:
    """int8 of the fp32 model at ``source``; ``full``: static QDQ, weights int8 per channel,
    symmetric, activations uint8 per tensor, asymmetric (onnxruntime's fast U8S8 kernels on
    x86), ranges from min/max over the calibration samples, biases left float (an int32
    Gemm bias only adds per-channel scales: measured as fast); ``dynamic``: see
    :func:`_quantize_dynamic`. The layers named in ``plan.keep_float`` stay float."""
    _, onnx = _imports()
    quantization = require("onnxruntime.quantization", "to quantize ONNX to int8")
    excluded = _int8_exclusions(onnx.load(str(source)), set(plan.keep_float))
    if plan.mode == "dynamic":
        _quantize_dynamic(quantization, source, dest, excluded)
    else:
        _quantize_static(quantization, source, dest, excluded, plan, request)
    quantized = onnx.load(str(dest))
    del quantized.graph.value_info[:]  # shape annotations the runtime infers anyway: 3% of an int8 model
    # float convolutions keep float weights: onnxruntime prepacks a constant weight once, and
    # a DequantizeLinear in front would make it re-pack on every run (3x slower convolutions)
    kept = {name for node in quantized.graph.node if node.name in excluded or node.op_type == "Conv"
            for name in node.input}
    _store_tables_in_int8(quantized, onnx, kept)
    onnx.save_model(quantized, str(dest))


def _quantize_static(quantization, source: Path, dest: Path, excluded: set[str], plan: Int8Plan,
                     request: ExportRequest) -> None:
    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter(plan.calibration)

        def get_next(self):
            x = next(self.samples, None)
            return None if x is None else {request.input_name: x[None]}

    try:
        with quiet_converters():
            quantization.quantize_static(
                str(source), str(dest), Reader(), quant_format=quantization.QuantFormat.QDQ,
                op_types_to_quantize=list(INT8_OP_TYPES), nodes_to_exclude=sorted(excluded), per_channel=True,
                activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
                calibrate_method=quantization.CalibrationMethod.MinMax,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "QuantizeBias": False},
            )
    except Exception as exc:
        raise ExportError(f"onnxruntime could not quantize {source.name}: {first_line(exc)}") from None


_TABLE_ELEMENTS = 4096  # float constants this large that feed float ops (position tables) are stored int8


def _store_tables_in_int8(model, onnx, kept: set[str]) -> None:
    """Large float constants left float because their consumer is (an Add of a position
    table) are stored int8, symmetric, per output channel for ≥2-D tables whose first axis is
    not 1 and per tensor otherwise, with a DequantizeLinear in front; ``kept`` stay as they are."""
    from onnx import numpy_helper

    graph = model.graph
    dequantized = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    nodes = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name in dequantized or init.name in kept:
            continue
        table = numpy_helper.to_array(init)
        if table.size < _TABLE_ELEMENTS or not np.all(np.isfinite(table)):
            continue
        name = init.name
        per_channel = table.ndim > 1 and table.shape[0] > 1  # a conv's weights: one scale per output channel
        peak = np.abs(table).reshape(table.shape[0], -1).max(1) if per_channel else np.abs(table).max()
        scale = (np.maximum(peak, 1e-12) / 127).astype(np.float32)
        shaped = scale.reshape((-1,) + (1,) * (table.ndim - 1)) if per_channel else scale
        stored = np.clip(np.rint(table / shaped), -127, 127).astype(np.int8)
        init.CopyFrom(numpy_helper.from_array(stored, f"{name}_int8"))
        graph.initializer.append(numpy_helper.from_array(np.asarray(scale, np.float32), f"{name}_int8_scale"))
        nodes.append(onnx.helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_int8_scale"], [name],
                                           axis=0))
    for node in reversed(nodes):
        graph.node.insert(0, node)


def _quantize_dynamic(quantization, source: Path, dest: Path, excluded: set[str]) -> None:
    """int8 weights per channel for the MatMuls of Linear layers; onnxruntime quantizes their
    input on each run and fuses the bias (DynamicQuantizeMatMul). Convolutions stay float:
    dynamic ConvInteger is slower than fp32 here (docs/int8.md)."""
    try:
        with quiet_converters():
            quantization.quantize_dynamic(str(source), str(dest), op_types_to_quantize=["MatMul"],
                                          nodes_to_exclude=sorted(excluded), per_channel=True,
                                          weight_type=quantization.QuantType.QInt8)
    except Exception as exc:
        raise ExportError(f"onnxruntime could not quantize {source.name}: {first_line(exc)}") from None


def _int8_exclusions(model, keep_float: set[str]) -> set[str]:
    """Nodes left float: MatMuls of two activations (attention), and the layers in
    ``keep_float`` (torch.export node names: torch.onnx names the layer's output value and
    node after them; the value is its Conv/Gemm's, or its bias Add's with the MatMul feeding it)."""
    weights = {init.name for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    excluded = {node.name for node in model.graph.node
                if node.op_type == "MatMul" and not any(name in weights for name in node.input)}
    by_name = {node.name.rsplit("/", 1)[-1]: node for node in model.graph.node}  # without the layer prefix
    for name in keep_float:
        node = producer.get(name) or by_name.get(f"node_{name}")  # a graph output is renamed; its node is not
        if node is None:
            continue
        excluded.add(node.name)
        excluded.update(producer[i].name for i in node.input if i in producer
                        and producer[i].op_type in INT8_OP_TYPES)
    return excluded


def write_metadata(path: Path, metadata: ArtifactMetadata) -> None:
    """Store ``metadata`` as the ``edgevit`` entry of the model's metadata_props."""
    _, onnx = _imports()
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    model.producer_name = "edgevit"
    model.producer_version = metadata.edgevit_version
    onnx.save_model(model, str(path))
