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


def _image_wrapper(request: ExportRequest):
    """The model behind a 0-255 RGB image input: ``(x / 255 - mean) / std`` baked in."""
    import torch

    class ImageInput(torch.nn.Module):
        def __init__(self, model, mean, std) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).reshape(1, -1, 1, 1)))
            self.register_buffer("shift", -torch.tensor(mean).reshape(1, -1, 1, 1) / torch.tensor(std).reshape(1, -1, 1, 1))

        def forward(self, x):
            return self.model(x * self.scale + self.shift)

    wrapper = ImageInput(request.model, request.mean, request.std).eval()
    example = torch.rand_like(request.example) * 255
    return torch.export.export(wrapper, (example,))


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
            if request.image_input:
                program = _image_wrapper(request)
                inputs = [ct.ImageType(name="image", shape=shape, scale=1.0, color_layout=ct.colorlayout.RGB)]
            else:
                program = request.program
                inputs = [ct.TensorType(name=request.input_name, shape=shape, dtype=np.float32)]
            classifier = ct.ClassifierConfig(list(request.labels)) if request.labels else None
            mlmodel = ct.convert(
                program.run_decompositions({}),
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
