"""The export flow: model -> torch.export -> exporter -> verify -> metadata -> atomic rename."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgevit.exporters import PRECISIONS, ExportRequest, exporter_module, resolve_targets
from edgevit.runtimes.loader import load

from ..artifact.input_form import parse_layout
from ..artifact.integrity import PLACEHOLDER, seal
from ..artifact.labels import read_labels
from ..artifact.metadata import ArtifactMetadata
from ..errors import ExportError, InputError
from ..int8.calibration import DEFAULT_CALIBRATION_SAMPLES, DEFAULT_EVAL_SAMPLES
from ..int8.guard import DEFAULT_MAX_DROP, GuardReport, Int8Job, Int8Options, int8_job, quantize_artifact
from ..models.factory import model_input_shape, resolve_model
from ..models.registry import get_spec
from ..models.spec import IMAGENET_MEAN, IMAGENET_STD
from ..optional import require
from ..paths import artifact_size, ensure_writable_dir, publish, staged_path
from .checks import DEFAULT_VERIFY_SAMPLES, Probe, verification_probes
from .fp16_range import Fp16RangeReport, computes_in_fp16, measure_range
from .parity import ParityReport, check_parity, structural_report
from .targets import check_ep, check_int8_options, input_form_for, output_path

Progress = Callable[[str], None]


@dataclass
class ExportResult:
    """One artifact written (or refused) by :func:`export_model`."""

    target: str
    path: Path
    precision: str
    written: bool
    size_bytes: int = 0
    seconds: float = 0.0
    parity: ParityReport | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    reparam: dict[str, Any] | None = None  # what re-parameterization folded (None: not applied)
    form: dict[str, Any] | None = None  # the target form the model was rewritten into (None: not applied)
    guard: GuardReport | None = None  # int8: what the accuracy guard measured and kept in float
    fp16_range: Fp16RangeReport | None = None  # fp16 programs: the largest magnitudes (refused: written False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "path": str(self.path),
            "precision": self.precision,
            "written": self.written,
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 2),
            "parity": self.parity.to_dict() if self.parity else None,
            "reparam": self.reparam,
            "form": self.form,
            "quantization": self.guard.to_dict() if self.guard else None,
            "fp16_range": self.fp16_range.to_dict() if self.fp16_range else None,
        }


def export_model(
    model: Any,
    target: str = "onnx",
    output: str | Path = "edgevit_out",
    *,
    weights: str | Path | None = None,
    image_size: int | Sequence[int] | None = None,
    precision: str = "fp32",
    verify: bool = True,
    reparam: bool = True,
    target_form: bool = True,
    ep: str | None = None,
    dynamic_batch: bool = False,
    image_input: bool | None = None,
    layout: str | None = None,
    with_softmax: bool = False,
    labels: Sequence[str] | str | Path | None = None,
    image: str | Path | None = None,
    verify_data: Any = None,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
    num_inputs: int = 3,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    output_name: str = "logits",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    calibration: Any = None,
    eval_data: Any = None,
    max_drop: float = DEFAULT_MAX_DROP,
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    eval_samples: int = DEFAULT_EVAL_SAMPLES,
    int8_mode: str | None = None,
    int8_io: bool = False,
) -> list[ExportResult]:
    """Export ``model`` (a registered name or an nn.Module) to one target or ``"all"``.

    A module with an ``input_size`` attribute is exported at exactly that size: (C, H, W)
    for image models with learned position tables, or any other shape for models that do
    not take images (e.g. ED-ViT's fusion head: ``(features,)``). ``mean``/``std`` (the
    normalization recorded in the metadata) default to the model's registered ones.

    With ``reparam`` (the default) the model is folded by :func:`edgevit.reparameterize`
    first (on a copy) and the artifact is verified against the *unfolded* model. With
    ``target_form`` (the default) the model is then rewritten into its target's form
    (:mod:`edgevit.reparam.forms`: channels-first for Core ML, channels-last for TFLite and ONNX
    Runtime), checked against the model as trained in float64 before tracing. ``ep``
    ("nnapi" or "coreml", ONNX only) picks the ``mobile`` form instead: the operators of
    ONNX Runtime Mobile's execution providers (:mod:`edgevit.reparam.mobile_ops`).

    ``layout`` ("nchw"/"nhwc") and ``image_input`` (RGB pixels 0-255 in, mean/std inside
    the model) set the input form (:mod:`edgevit.artifact.input_form`); left at None, TFLite gets
    the app form (NHWC pixels, what MediaPipe Tasks and the LiteRT task library load) and
    ONNX and Core ML the normalized NCHW tensor. ``with_softmax`` ends the model in a
    softmax, so the artifact outputs probabilities.

    ``precision="int8"`` needs ``calibration`` data (``"digits"``, an image folder, an
    ``.npz``, an array: :mod:`edgevit.int8.calibration`); the accuracy guard
    (:mod:`edgevit.int8.guard`) measures the artifact on ``eval_data`` (default: the
    calibration data's samples after the first ``calibration_samples``) and keeps the most
    sensitive layers in float until the top-1 drop is at most ``max_drop`` points, or writes
    nothing. ``int8_mode`` picks the target's scheme (``full``, ``dynamic``, ``weights``,
    ``palettize``);
    ``int8_io`` gives TFLite int8 input and output tensors.

    Verification (:mod:`edgevit.pipeline.checks`) runs ``num_inputs`` seeded random inputs,
    edgevit's photos, up to ``verify_samples`` samples of ``verify_data`` (the sources of
    ``calibration``) and ``image``; the parity report gives the error per kind. An fp16
    program (``precision="fp16"``, Core ML's int8 ``full``) is first run in PyTorch on those
    inputs and refused, unwritten, when a tensor leaves fp16's safe range
    (:mod:`edgevit.pipeline.fp16_range`).
    """
    require("torch", "to export models")
    from .tracing import ModelSide, model_form, num_classes  # torch: the model side of the export
    from .artifact_module import MODEL_ATTRIBUTE  # torch: the wrapper the programs are traced in

    say = progress or (lambda message: None)
    targets = resolve_targets(target)
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: choose {' or '.join(PRECISIONS)}")
    if num_inputs < 1:
        raise InputError("verification needs at least one input (num_inputs >= 1)")
    if verify_samples < 1:
        raise InputError("--verify-samples must be at least 1")
    if layout is not None:
        parse_layout(layout)  # a wrong name is reported before any long work starts
    if (options or {}).get("native_ops") and targets != ["onnx"]:
        raise InputError("native attention ops (ai.edgevit nodes) are an ONNX export option: use --target onnx")
    check_ep(ep, targets, target_form, bool((options or {}).get("native_ops")))
    for tgt in targets:  # a missing converter is reported before any long work starts
        exporter_module(tgt).check_dependencies()
    int8 = Int8Options(calibration, eval_data, max_drop, calibration_samples, eval_samples, int8_mode, int8_io)
    check_int8_options(int8, precision, targets)
    if isinstance(model, str):
        get_spec(model)  # an unknown name is reported before any progress
        say(f"building {model}" + (f" with weights {weights}" if weights else " (random weights)"))
    spec, module, name = resolve_model(model, weights)
    shape = model_input_shape(module, spec, name, image_size, image)
    finals = {t: output_path(output, name, t, precision) for t in targets}
    for final in finals.values():
        ensure_writable_dir(final.parent)
    class_labels = read_labels(labels)
    mean = tuple(mean) if mean is not None else (spec.mean if spec else IMAGENET_MEAN)
    std = tuple(std) if std is not None else (spec.std if spec else IMAGENET_STD)

    input_forms = {t: input_form_for(t, shape, layout, image_input, mean, std) for t in targets}
    if class_labels is not None and len(class_labels) != (classes := num_classes(module, shape)):
        raise InputError(f"{len(class_labels)} labels given, but {name} has {classes} classes")

    job = int8_job(int8, shape, mean, std, spec.crop_pct if spec else 0.875, class_labels, say) \
        if precision == "int8" else None
    checks, sources = verification_probes(shape, mean, std, spec.crop_pct if spec else 0.875, num_inputs=num_inputs,
                                          seed=seed, data=verify_data, samples=verify_samples, image=image,
                                          progress=say)
    side = ModelSide(module, name, shape, _fold_checks(checks), reparam=reparam, with_softmax=with_softmax,
                     seed=seed, say=say)
    results = []
    for tgt in targets:
        form = input_forms[tgt]
        wrapped, example, program, form_summary = side.program(model_form(tgt, target_form, ep), form)
        request = ExportRequest(
            model=wrapped, program=program, example=example, model_name=name, precision=precision,
            dynamic_batch=dynamic_batch and tgt == "onnx", form=form, labels=class_labels,
            options=dict(options or {}), output_name=output_name,
            output_kind="probabilities" if with_softmax else "logits",
        )
        form_checks = [probe.in_form(form) for probe in checks]
        fp16 = None
        if computes_in_fp16(tgt, precision, int8.mode or exporter_module(tgt).INT8_MODES[0]):
            say(f"{tgt}: measuring every tensor's range for fp16 on {len(form_checks)} inputs")
            fp16 = measure_range(program, [probe.x for probe in form_checks], root=MODEL_ATTRIBUTE)
            if not fp16.passed:
                results.append(ExportResult(tgt, finals[tgt], precision, written=False, fp16_range=fp16,
                                            reparam=side.fold_summary, form=form_summary))
                continue
        results.append(_export_one(tgt, exporter_module(tgt), request, finals[tgt], spec, verify, form_checks,
                                   side.reference(form), say, side.fold_summary, job, form_summary, sources, fp16))
    return results


_FOLD_CHECK_SAMPLES = 4  # data samples the float64 fold and form checks also run (each costs two float64 runs)


def _fold_checks(probes: list[Probe]) -> list[np.ndarray]:
    """The inputs folds and forms are checked on: every probe but the data beyond the first few."""
    data = [p for p in probes if p.kind == "data"][:_FOLD_CHECK_SAMPLES]
    return [p.x for p in probes if p.kind != "data"] + [p.x for p in data]


def _export_one(target, exporter, request, final: Path, spec, verify: bool, checks: list[Probe], reference,
                say: Progress, fold_summary: dict[str, Any] | None = None, job: Int8Job | None = None,
                form_summary: dict[str, Any] | None = None, sources: dict[str, str] | None = None,
                fp16: Fp16RangeReport | None = None) -> ExportResult:
    started = time.perf_counter()
    with staged_path(final) as staged:
        say(f"{target}: converting")
        guard = None
        if job is not None:
            runtime, guard = quantize_artifact(target, exporter, request, staged, job, reference, load, say)
        else:
            exporter.convert(request, staged)
            runtime = load(staged)
        report = None
        if verify or guard is not None:
            say(f"{target}: verifying parity with PyTorch ({runtime.describe()})")
            if runtime.can_run:
                report = check_parity(runtime, reference, checks, request.precision, sources)
            else:
                report = structural_report(runtime, tuple(request.example.shape), request.precision)
        if guard is not None:
            report.verdict = guard.passed
            report.note = (f"int8 is judged by the accuracy guard on {guard.held_out['count']} held-out samples "
                           "(top-1 drop within the budget); these rows are informative")
        metadata = ArtifactMetadata(
            model=request.model_name, target=target, precision=request.precision,
            input_name=runtime.inputs[0].name, input_shape=list(runtime.inputs[0].shape),
            layout=request.form.layout, image_input=request.form.pixels, mean=list(request.form.mean),
            std=list(request.form.std), crop_pct=spec.crop_pct if spec else 0.875,
            output_name=runtime.outputs[0].name, output_kind=request.output_kind,
            labels=request.labels, parity=report.summary() if report else None, reparam=fold_summary,
            form=form_summary,
            integrity={"sha256": PLACEHOLDER},
            quantization=guard.summary(artifact_size(staged)) if guard else None,
            fp16_range=fp16.summary() if fp16 else None,
        )
        result = ExportResult(target, final, request.precision, written=False, parity=report,
                              metadata=metadata.to_dict(), reparam=fold_summary, guard=guard, form=form_summary,
                              fp16_range=fp16)
        if report is None or report.passed:
            exporter.write_metadata(staged, metadata)
            say(f"{target}: recording the content digest")
            result.metadata["integrity"] = {"sha256": _seal(staged, runtime, checks[0].x if verify else None)}
            publish(staged, final)
            result.written = True
            result.size_bytes = artifact_size(final)
        result.seconds = time.perf_counter() - started
        return result


def _seal(staged: Path, verified, probe: np.ndarray | None) -> str:
    """Record the artifact's content digest in its metadata, then prove that the final
    artifact loads intact and computes exactly what the verified one computed on ``probe``."""
    digest = load(staged, integrity_check=False).integrity.actual
    seal(staged, digest)
    final = load(staged)
    if final.integrity is None or final.integrity.status != "intact":
        raise ExportError(f"{staged.name}: the content digest could not be recorded in the artifact")
    if probe is not None and final.can_run and verified.can_run \
            and not np.array_equal(final.run(probe), verified.run(probe)):
        raise ExportError(f"{staged.name}: writing the metadata changed what the artifact computes")
    return digest

