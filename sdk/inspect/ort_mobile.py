"""ONNX Runtime's mobile usability checker on an ONNX artifact: NNAPI (Android), Core ML
MLProgram and Core ML NeuralNetwork (iOS) execution providers.

The partitioning is the vendor's (``onnxruntime.tools.mobile_helpers.usability_checker``,
which mirrors ORT's own ``CreateSupportedPartitionNodeGroups``), run as its command-line
tool runs it: on the model optimized at the BASIC level, with shapes inferred, fixed input
sizes required. It judges op types, ranks and shapes; an op's caveats (its attributes)
it lists unchecked, and it cannot know a device's driver.
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path

from edgevit.native import onnx_nodes

from ..errors import ArtifactError, first_line
from ..optional import require
from .accelerators import AcceleratorReport, group_layers

# accelerator -> (the checker's supported-ops table, its name in the checker's sentences)
EXECUTION_PROVIDERS = {
    "NNAPI": ("nnapi_supported_ops.md", "NNAPI"),
    "Core ML MLProgram": ("coreml_supported_mlprogram_ops.md", "CoreML MLProgram"),
    "Core ML NeuralNetwork": ("coreml_supported_neuralnetwork_ops.md", "CoreML NeuralNetwork"),
}
PURPOSE = "to check an ONNX model for the mobile execution providers"


def check_onnx(path: Path, native_ops: bool) -> tuple[list[AcceleratorReport], list[str]]:
    """Each mobile execution provider's partitioning of the ONNX model at ``path`` (with
    ``ai.edgevit`` nodes when ``native_ops``: its loader said so)."""
    require("onnx", PURPOSE)
    ort = require("onnxruntime", PURPOSE)
    usability = require("onnxruntime.tools.mobile_helpers.usability_checker", PURPOSE)
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        _optimize(path, optimized, ort, native_ops)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
    dynamic_inputs, _ = usability.check_shapes(model.graph)
    analyzer = f"onnxruntime {ort.__version__} mobile usability checker"
    reports = []
    for accelerator, (table, name) in EXECUTION_PROVIDERS.items():
        if accelerator == "NNAPI":
            info = usability.check_nnapi_partitions(model, True)
        else:
            info = usability.check_coreml_partitions(model, True, table)
        unsupported_ops = {_short(op) for op in info.unsupported_ops | info.ops_with_unsupported_rank}
        supported = {id(node) for group in info.supported_groups for node in group}
        pairs = [(_short(f"{node.domain or 'ai.onnx'}:{node.op_type}"), layer_of(node.name))
                 for node in model.graph.node if id(node) not in supported]
        reports.append(AcceleratorReport(
            accelerator=accelerator, analyzer=analyzer, nodes=info.num_nodes, supported=info.num_supported_nodes,
            partitions=info.num_partitions, suitable=info.suitability().name.lower(),
            verdict=_verdict(info, name),
            unsupported=group_layers((op, layer) for op, layer in pairs if op in unsupported_ops),
            caveats=info.supported_ops_checker.get_caveats()))
    notes = []
    if dynamic_inputs:
        notes.append("inputs with a dynamic size (" + ", ".join(i.name for i in dynamic_inputs) + "): NNAPI takes "
                     "none of their nodes; export without --dynamic-batch for a phone")
    return reports, notes


def layer_of(node_name: str) -> str:
    """The layer a node comes from: edgevit's exporter names nodes ``module.path/op``."""
    return node_name.rsplit("/", 1)[0]


def _short(op: str) -> str:
    """``ai.onnx:Gelu`` -> ``Gelu``; other domains keep their name."""
    return op.split(":", 1)[1] if op.startswith("ai.onnx:") else op


def _verdict(info, name: str) -> str:
    """The checker's own closing sentence (``print_analysis``'s last line)."""
    stream = io.StringIO()
    logger = logging.getLogger("edgevit.ort_mobile_checker")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        info.print_analysis(logger, name)
    finally:
        logger.removeHandler(handler)
    lines = [line.strip() for line in stream.getvalue().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _optimize(source: Path, dest: Path, ort, native_ops: bool) -> None:
    """The model at the BASIC level, as the checker's command line optimizes it (with
    edgevit's custom-op library for ``ai.edgevit`` nodes)."""
    data = source.read_bytes()
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(dest)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.pb")
    try:
        if native_ops:
            onnx_nodes.session(source, data, options, ["CPUExecutionProvider"])
        else:
            ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"ONNX Runtime cannot optimize {source} for the checker: {first_line(exc)}") from None
