"""Core ML exporter: ML Program from a torch.export program, fp32 or fp16, iOS 16+."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgevit.errors import EdgeVitError, ExportError, first_line
from edgevit.metadata import METADATA_KEY, ArtifactMetadata
from edgevit.quiet import quiet_converters

from edgevit.runtimes.coreml import import_coremltools

from . import ExportRequest

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
