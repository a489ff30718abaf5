"""Core ML exporter: ML Program from a torch.export program, fp32 or fp16, iOS 16+."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from edgevit.errors import EdgeVitError, ExportError, first_line
from edgevit.metadata import METADATA_KEY, ArtifactMetadata
from edgevit.quantization import Int8Plan
from edgevit.quiet import quiet_converters
from edgevit.runtimes.coreml import import_coremltools

from . import ExportRequest

INT8_MODES = ("weights", "palettize")  # 8-bit linear weights per channel, or 8-bit palettes (256-entry LUTs)
# coremltools' activation quantization (W8A8) calibrates by running the model with Core ML,
# which needs macOS: on Linux edgevit compresses weights only, and activations stay float.
INT8_FLOAT_BY_DEFAULT = ("all activations (weights-only compression)",)

DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18")
DEFAULT_DEPLOYMENT_TARGET = "iOS16"


def check_dependencies() -> None:
    """Raise MissingDependencyError unless coremltools imports."""
    import_coremltools()


def convert(request: ExportRequest, dest: Path) -> None:
    """Convert ``request.program`` to an .mlpackage directory at ``dest``."""
    ct = import_coremltools()
    if request.dynamic_batch:
        raise ExportError("the Core ML exporter writes a static batch: drop --dynamic-batch for coreml")
    target_name = request.options.get("deployment_target", DEFAULT_DEPLOYMENT_TARGET)
    if target_name not in DEPLOYMENT_TARGETS:
        raise EdgeVitError(f"unknown Core ML deployment target {target_name!r}: use {', '.join(DEPLOYMENT_TARGETS)}")
    shape = tuple(request.example.shape)
    try:
        with quiet_converters():
            if request.form.pixels:  # the program applies mean/std (edgevit.artifact_module)
                inputs = [ct.ImageType(name="image", shape=shape, scale=1.0, color_layout=ct.colorlayout.RGB)]
            else:
                inputs = [ct.TensorType(name=request.input_name, shape=shape, dtype=np.float32)]
            classifier = ct.ClassifierConfig(list(request.labels)) if request.labels else None
            mlmodel = ct.convert(
                request.program.run_decompositions({}),
                inputs=inputs,
                outputs=None if classifier else [ct.TensorType(name=request.output_name, dtype=np.float32)],
                classifier_config=classifier,
                convert_to="mlprogram",
                minimum_deployment_target=getattr(ct.target, target_name),
                compute_precision=ct.precision.FLOAT16 if request.precision == "fp16" else ct.precision.FLOAT32,
            )
            mlmodel.short_description = f"{request.model_name} exported by edgevit"
            mlmodel.save(str(dest))
    except EdgeVitError:
        raise
    except Exception as exc:
        raise ExportError(f"coremltools could not convert {request.model_name}: {first_line(exc)}") from None


def quantize(source: Path, dest: Path, plan: Int8Plan, request: ExportRequest) -> None:
    """Compress the fp32 package's weights with ``coremltools.optimize``: int8 linear per
    output channel, symmetric (``weights``), or 8-bit k-means palettes (``palettize``); the
    layers in ``plan.keep_float`` keep float weights."""
    ct = import_coremltools()
    from coremltools.optimize import coreml as optimize

    if plan.mode == "palettize":
        op_config = optimize.OpPalettizerConfig(nbits=8, mode="kmeans", weight_threshold=_WEIGHT_THRESHOLD)
        compress = optimize.palettize_weights
    else:
        op_config = optimize.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                     granularity="per_channel", weight_threshold=_WEIGHT_THRESHOLD)
        compress = optimize.linear_quantize_weights
    try:
        with quiet_converters():
            mlmodel = ct.models.MLModel(str(source), skip_model_load=True)
            kept = _op_names(set(plan.keep_float))
            config = optimize.OptimizationConfig(global_config=op_config, op_name_configs={n: None for n in kept})
            compress(mlmodel, config).save(str(dest))
    except Exception as exc:
        raise ExportError(f"coremltools could not compress {source.name}: {first_line(exc)}") from None


_WEIGHT_THRESHOLD = 256  # weights with fewer elements (norms, biases) stay float: they weigh nothing


def _op_names(layers: set[str]) -> list[str]:
    """Core ML op names of torch.export nodes: kept, except that the first of a kind gains
    ``_0`` (``linear`` -> ``linear_0``); ``op_name_configs`` takes the consuming op's name."""
    return sorted(layers | {f"{name}_0" for name in layers if not name.rsplit("_", 1)[-1].isdigit()})


def write_metadata(path: Path, metadata: ArtifactMetadata) -> None:
    """Store ``metadata`` in the package's user-defined metadata (and author/version)."""
    ct = import_coremltools()
    staging = path.with_name(".meta-tmp-" + path.name)
    with quiet_converters():
        mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
        mlmodel.user_defined_metadata[METADATA_KEY] = metadata.to_json()
        mlmodel.author = "edgevit"
        mlmodel.version = metadata.edgevit_version
        mlmodel.save(str(staging))
    shutil.rmtree(path)
    staging.rename(path)
