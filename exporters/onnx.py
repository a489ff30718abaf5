"""ONNX exporter: torch.onnx's dynamo path, optimized and cleaned, metadata in metadata_props."""

from __future__ import annotations

from pathlib import Path

from edgevit import native_onnx
from edgevit.errors import EdgeVitError, ExportError, first_line
from edgevit.metadata import METADATA_KEY, ArtifactMetadata
from edgevit.optional import require
from edgevit.quiet import quiet_converters

from . import ExportRequest

DEFAULT_OPSET = 20  # 18 is the minimum; 20 (native Gelu) runs faster in ONNX Runtime


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
    if request.precision != "fp32":
        raise EdgeVitError("the ONNX exporter writes fp32 only; use --precision fp32 for ONNX")
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
                custom_translation_table=native_onnx.translation_table() if native_ops else None,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx could not export {request.model_name}: {first_line(exc)}") from None
    from onnxscript.ir.passes.common import ClearMetadataAndDocStringPass

    # torch.onnx records a stack trace, FX name and scope on every node: about 1.3 KB a
    # node, 40% of a 1 MB model, with no effect on what it computes
    ClearMetadataAndDocStringPass()(onnx_program.model)
    model = clean_graph(onnx_program.model_proto)
    onnx.save_model(model, str(dest))


def _trace(request: ExportRequest, torch, native_ops: bool):
    """Trace again: for a dynamic batch, or with the attention as ``edgevit::`` ops (native_ops)."""
    from edgevit.native_torch import attention_modules, attention_path

    if native_ops and not attention_modules(request.model):
        raise ExportError(f"{request.model_name} has no XCA or simplified linear attention for --native-ops")
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
