"""Verify an artifact against the PyTorch model it was exported from (``edgevit verify``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgevit.runtimes.loader import load

from ..artifact.input_form import InputForm
from ..errors import InputError
from ..models.factory import resolve_model
from ..optional import require
from .checks import DEFAULT_VERIFY_SAMPLES, verification_probes
from .parity import ParityReport, check_parity, structural_report


def verify_artifact(artifact_path: str | Path, model: Any, *, weights: str | Path | None = None,
                    image: str | Path | None = None, verify_data: Any = None,
                    verify_samples: int = DEFAULT_VERIFY_SAMPLES, num_inputs: int = 3, seed: int = 0,
                    runtime: str = "auto", integrity_check: bool = True) -> ParityReport:
    """Compare an artifact with the PyTorch model (a registered name or an nn.Module) on
    ``num_inputs`` random inputs, edgevit's photos, up to ``verify_samples`` samples of
    ``verify_data`` and ``image`` (:mod:`edgevit.pipeline.checks`), in the input form its
    metadata records; an artifact changed since export is refused (ArtifactError) unless
    ``integrity_check`` is False."""
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
    if num_inputs < 1 or verify_samples < 1:
        raise InputError("verification needs at least one random input and one data sample")
    nchw = form.model_shape(shape)
    crop = meta.crop_pct if meta else (spec.crop_pct if spec else 0.875)
    checks, sources = verification_probes(nchw, form.mean, form.std, crop, num_inputs=num_inputs, seed=seed,
                                          data=verify_data, samples=verify_samples, image=image)
    softmax = meta is not None and meta.output_kind == "probabilities"
    try:
        return check_parity(rt, reference(module, form, softmax), [p.in_form(form) for p in checks], precision,
                            sources)
    except RuntimeError as exc:  # the model cannot take the artifact's input shape
        raise InputError(f"the PyTorch model does not accept the artifact's input {shape}: {exc}") from None
