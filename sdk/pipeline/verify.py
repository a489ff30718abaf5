"""Verify an artifact against the PyTorch model it was exported from (``edgevit verify``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgevit.runtimes.loader import load

from ..artifact.input_form import InputForm
from ..artifact.preprocess import load_image
from ..errors import InputError
from ..models.factory import resolve_model
from ..optional import require
from .parity import ParityReport, check_parity, parity_inputs, structural_report


def verify_artifact(artifact_path: str | Path, model: Any, *, weights: str | Path | None = None,
                    image: str | Path | None = None, num_inputs: int = 3, seed: int = 0,
                    runtime: str = "auto", integrity_check: bool = True) -> ParityReport:
    """Compare an artifact with the PyTorch model (a registered name or an nn.Module) on
    ``num_inputs`` random inputs (and ``image``), in the input form its metadata records; an
    artifact changed since export is refused (ArtifactError) unless ``integrity_check`` is False."""
    require("torch", "to verify artifacts against PyTorch")
    from .tracing import reference  # torch

    rt = load(artifact_path, runtime=runtime, integrity_check=integrity_check)
    spec, module, _ = resolve_model(model, weights)
    meta = rt.metadata
    precision = meta.precision if meta else "fp32"
    form = InputForm.of(meta, image_input=rt.inputs[0].image)
    if meta is None and spec is not None:  # no metadata: the model's own normalization
        form = dataclasses.replace(form, mean=tuple(spec.mean), std=tuple(spec.std))
    shape = tuple(1 if d is None else d for d in rt.inputs[0].shape)
    if not rt.can_run:
        return structural_report(rt, shape, precision)
    if len(shape) != 4:
        raise InputError(f"{artifact_path} takes a rank-{len(shape)} input; edgevit verifies image models")
    nchw = form.model_shape(shape)
    checks = parity_inputs(nchw, num_inputs, seed)
    if image is not None:
        crop = meta.crop_pct if meta else 0.875
        checks.append((f"image {Path(image).name}", load_image(image, nchw[2:], form.mean, form.std, crop)))
    softmax = meta is not None and meta.output_kind == "probabilities"
    try:
        return check_parity(rt, reference(module, form, softmax),
                            [(name, form.from_normalized(x)) for name, x in checks], precision)
    except RuntimeError as exc:  # the model cannot take the artifact's input shape
        raise InputError(f"the PyTorch model does not accept the artifact's input {shape}: {exc}") from None
