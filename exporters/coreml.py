"""Core ML exporter: ML Program from a torch.export program, fp32 or fp16, iOS 16+."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from edgevit.artifact.metadata import METADATA_KEY, ArtifactMetadata
from edgevit.errors import EdgeVitError, ExportError, InputError, first_line
from edgevit.int8.guard import Int8Plan
from edgevit.quiet import quiet_converters
from edgevit.runtimes.coreml import import_coremltools
from edgevit.runtimes.mil_program import WeightFile
from edgevit.runtimes.mil_reference import MilInterpreter

from . import ExportRequest

# weights: 8-bit linear weights per channel; palettize: 8-bit palettes (256-entry LUTs);
# full: W8A8, activations quantized with ranges from the calibration samples (iOS17+, fp16)
INT8_MODES = ("weights", "palettize", "full")
INT8_FLOAT_BY_DEFAULT = ("activations, except in full mode: the inputs and outputs of conv and linear",)

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
            if request.form.pixels:  # the program applies mean/std (edgevit.pipeline.artifact_module)
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
    """Compress with ``coremltools.optimize``: weights int8 linear per output channel,
    symmetric (``weights``), or 8-bit k-means palettes (``palettize``); ``full`` first
    quantizes activations (W8A8) on an fp16 iOS17+ program, calibrated by running the
    samples through edgevit's reference interpreter (coremltools would run Core ML, which
    needs macOS). The layers in ``plan.keep_float`` stay float."""
    ct = import_coremltools()
    from coremltools.optimize import coreml as optimize

    if plan.mode == "palettize":
        op_config = optimize.OpPalettizerConfig(nbits=8, mode="kmeans", weight_threshold=_WEIGHT_THRESHOLD)
        compress = optimize.palettize_weights
    else:
        op_config = optimize.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                     granularity="per_channel", weight_threshold=_WEIGHT_THRESHOLD)
        compress = optimize.linear_quantize_weights
    if plan.mode == "full":
        source = _fp16_program(request, dest)
    kept = {n: None for n in _op_names(set(plan.keep_float), fp16=plan.mode == "full")}
    try:
        with quiet_converters():
            mlmodel = ct.models.MLModel(str(source), skip_model_load=True)
            if plan.mode == "full":
                name = mlmodel.get_spec().description.input[0].name
                activations = optimize.OptimizationConfig(
                    global_config=optimize.OpLinearQuantizerConfig(mode="linear_symmetric"), op_name_configs=kept)
                with calibration_by_interpreter():
                    mlmodel = optimize.linear_quantize_activations(
                        mlmodel, activations, [{name: x[None]} for x in plan.calibration])
            compress(mlmodel, optimize.OptimizationConfig(global_config=op_config, op_name_configs=kept)).save(
                str(dest))
    except EdgeVitError:
        raise
    except Exception as exc:
        raise ExportError(f"coremltools could not compress {source.name}: {first_line(exc)}") from None
    finally:
        if plan.mode == "full":
            shutil.rmtree(source, ignore_errors=True)


def _fp16_program(request: ExportRequest, dest: Path) -> Path:
    """The fp16 iOS17+ package W8A8 starts from (its activation scales are fp16), beside ``dest``."""
    target = request.options.get("deployment_target", "iOS17")
    if DEPLOYMENT_TARGETS.index(target) < DEPLOYMENT_TARGETS.index("iOS17"):
        raise InputError(f"Core ML int8 'full' (W8A8) needs iOS17 or newer, not {target}: "
                         "use --deployment-target iOS17")
    source = dest.with_name("fp16-" + dest.name)
    convert(replace(request, precision="fp16", options={**request.options, "deployment_target": target}), source)
    return source


@contextlib.contextmanager
def calibration_by_interpreter() -> Iterator[None]:
    """coremltools' activation calibration, with the intermediate values computed by the
    reference interpreter instead of Core ML (``ModelDebugger`` is what it runs them with)."""
    from coremltools.optimize.coreml.experimental._model_debugger import ModelDebugger

    def predict_intermediate_outputs(debugger, inputs, output_names, compute_units=None):
        spec = type(debugger.model_info.spec)()
        spec.CopyFrom(debugger.model_info.spec)
        main = spec.mlProgram.functions["main"]
        main.block_specializations[main.opset].outputs.extend(output_names)
        model_dir = Path(debugger.weights_dir).parent
        return MilInterpreter(spec, model_dir, WeightFile(model_dir, model_dir)).run(inputs)

    original = ModelDebugger.predict_intermediate_outputs
    ModelDebugger.predict_intermediate_outputs = predict_intermediate_outputs
    try:
        yield
    finally:
        ModelDebugger.predict_intermediate_outputs = original


_WEIGHT_THRESHOLD = 256  # weights with fewer elements (norms, biases) stay float: they weigh nothing


def _op_names(layers: set[str], fp16: bool = False) -> list[str]:
    """Core ML op names of torch.export nodes: kept, except that the first of a kind gains
    ``_0`` (``linear`` -> ``linear_0``) and fp16 programs add ``_cast_fp16``;
    ``op_name_configs`` takes the consuming op's name."""
    names = layers | {f"{name}_0" for name in layers if not name.rsplit("_", 1)[-1].isdigit()}
    return sorted(f"{name}_cast_fp16" for name in names) if fp16 else sorted(names)


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
