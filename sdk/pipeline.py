"""The export flow: model -> torch.export -> exporter -> verify -> metadata -> atomic rename."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .calibration import DEFAULT_CALIBRATION_SAMPLES, DEFAULT_EVAL_SAMPLES
from .errors import EdgeVitError, ExportError, InputError, first_line
from .input_form import InputForm, parse_layout
from .integrity import PLACEHOLDER, seal
from .metadata import ArtifactMetadata
from .models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, get_spec
from .optional import require
from .parity import ParityReport, check_parity, parity_inputs, structural_report
from .paths import artifact_size, ensure_writable_dir, publish, staged_path
from .quantization import DEFAULT_MAX_DROP, GuardReport, Int8Job, Int8Options, quantize_artifact

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
        }


def _image_hw(image_size: int | Sequence[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    if image_size is None:
        return default
    if isinstance(image_size, int):
        return (image_size, image_size)
    hw = tuple(int(v) for v in image_size)
    if len(hw) != 2:
        raise InputError(f"image size must be one number or (height, width), got {image_size!r}")
    return hw  # type: ignore[return-value]


def read_labels(labels: Sequence[str] | str | Path | None) -> list[str] | None:
    """Class labels from a list, or a text file with one label per line."""
    if labels is None or isinstance(labels, (list, tuple)):
        return list(labels) if labels is not None else None
    path = Path(labels)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise InputError(f"cannot read labels file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read labels file {path}: it is not UTF-8 text") from None
    return [line for line in lines if line]


def output_path(output: str | Path, model_name: str, target: str, precision: str) -> Path:
    """``output`` is a directory (the file is named after the model) or a file with the target's suffix."""
    from edgevit.exporters import artifact_suffix

    output = Path(output)
    suffix = artifact_suffix(target)
    if output.suffix.lower() == suffix:
        return output
    stem = model_name if precision == "fp32" else f"{model_name}_{precision}"
    return output / f"{stem}{suffix}"


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
    dynamic_batch: bool = False,
    image_input: bool | None = None,
    layout: str | None = None,
    with_softmax: bool = False,
    labels: Sequence[str] | str | Path | None = None,
    image: str | Path | None = None,
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
    (:mod:`edgevit.forms`: channels-first for Core ML, channels-last for TFLite and ONNX
    Runtime), checked against the model as trained in float64 before tracing.

    ``layout`` ("nchw"/"nhwc") and ``image_input`` (RGB pixels 0-255 in, mean/std inside
    the model) set the input form (:mod:`edgevit.input_form`); left at None, TFLite gets
    the app form (NHWC pixels, what MediaPipe Tasks and the LiteRT task library load) and
    ONNX and Core ML the normalized NCHW tensor. ``with_softmax`` ends the model in a
    softmax, so the artifact outputs probabilities.

    ``precision="int8"`` needs ``calibration`` data (``"digits"``, an image folder, an
    ``.npz``, an array: :mod:`edgevit.calibration`); the accuracy guard
    (:mod:`edgevit.quantization`) measures the artifact on ``eval_data`` (default: the
    calibration data's samples after the first ``calibration_samples``) and keeps the most
    sensitive layers in float until the top-1 drop is at most ``max_drop`` points, or writes
    nothing. ``int8_mode`` picks the target's scheme (``full``, ``dynamic``, ``weights``,
    ``palettize``);
    ``int8_io`` gives TFLite int8 input and output tensors.
    """
    torch = require("torch", "to export models")

    from edgevit.exporters import PRECISIONS, ExportRequest, exporter_module, resolve_targets
    from edgevit.runtimes.loader import load

    from .artifact_module import artifact_module
    from .forms import form_for

    say = progress or (lambda message: None)
    targets = resolve_targets(target)
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: choose {' or '.join(PRECISIONS)}")
    if num_inputs < 1:
        raise InputError("verification needs at least one input (num_inputs >= 1)")
    if layout is not None:
        parse_layout(layout)  # a wrong name is reported before any long work starts
    if (options or {}).get("native_ops") and targets != ["onnx"]:
        raise InputError("native attention ops (ai.edgevit nodes) are an ONNX export option: use --target onnx")
    for tgt in targets:  # a missing converter is reported before any long work starts
        exporter_module(tgt).check_dependencies()
    native_ops = bool((options or {}).get("native_ops"))
    if native_ops and target_form:
        say("native attention ops: the model is exported as trained (its target form would bypass them)")
    int8 = Int8Options(calibration, eval_data, max_drop, calibration_samples, eval_samples, int8_mode, int8_io)
    check_int8_options(int8, precision, targets)
    spec, module, name = _resolve_model(model, weights, say)
    shape = model_input_shape(module, spec, name, image_size, image)
    finals = {t: output_path(output, name, t, precision) for t in targets}
    for final in finals.values():
        ensure_writable_dir(final.parent)
    class_labels = read_labels(labels)
    mean = tuple(mean) if mean is not None else (spec.mean if spec else IMAGENET_MEAN)
    std = tuple(std) if std is not None else (spec.std if spec else IMAGENET_STD)

    input_forms = {t: input_form_for(t, shape, layout, image_input, mean, std) for t in targets}
    if class_labels is not None and len(class_labels) != (classes := _num_classes(module, shape)):
        raise InputError(f"{len(class_labels)} labels given, but {name} has {classes} classes")

    job = int8_job(int8, shape, mean, std, spec.crop_pct if spec else 0.875, class_labels, say) \
        if precision == "int8" else None
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(*shape, generator=generator)
    checks = parity_inputs(shape, num_inputs, seed)
    if image is not None:
        from .preprocess import load_image

        crop = spec.crop_pct if spec else 0.875
        checks.append((f"image {Path(image).name}", load_image(image, shape[2:], mean, std, crop)))

    trained = module  # the model as trained: every artifact answers to it
    fold_summary = None
    if reparam:
        say(f"re-parameterizing {name}")
        from .reparam.checked import fold_checked

        module, fold_report = fold_checked(module, name, [x for _, x in checks])
        fold_summary = fold_report.to_dict(entries=False)
    rewritten: dict[str | None, tuple[Any, dict[str, Any] | None]] = {}  # model form (None: as trained) ->
    traced: dict[tuple[str | None, InputForm], tuple[Any, Any, Any]] = {}  # -> (module, example, program)
    results = []
    for tgt in targets:
        form = input_forms[tgt]
        model_form = form_for(tgt) if target_form and not native_ops else None
        if model_form not in rewritten:
            rewritten[model_form] = _rewrite(module, trained, name, model_form, checks, say)
        form_module, form_summary = rewritten[model_form]
        if (model_form, form) not in traced:
            wrapped = artifact_module(form_module, form, with_softmax, fold_shape=shape if reparam else None)
            if getattr(wrapped, "folded_into", None):
                say(f"pixel normalization folded into {wrapped.folded_into}")
            traced[model_form, form] = _trace(wrapped, form, example, name, say)
        wrapped, form_example, program = traced[model_form, form]
        exporter = exporter_module(tgt)
        request = ExportRequest(
            model=wrapped, program=program, example=form_example, model_name=name, precision=precision,
            dynamic_batch=dynamic_batch and tgt == "onnx", form=form, labels=class_labels,
            options=dict(options or {}), output_name=output_name,
            output_kind="probabilities" if with_softmax else "logits",
        )
        reference = torch_reference(artifact_module(trained, form, with_softmax))
        form_checks = [(label, form.from_normalized(x)) for label, x in checks]
        results.append(_export_one(tgt, exporter, request, finals[tgt], spec, verify, form_checks, reference, load,
                                   say, fold_summary, job, form_summary))
    return results


def _rewrite(module: Any, trained: Any, name: str, model_form: str | None, checks, say: Progress):
    """(``module`` in ``model_form``, summary of the rewrite or None), checked against ``trained``;
    ``module`` itself when ``model_form`` is None (exported as trained)."""
    if model_form is None:
        return module, None
    from .forms import form_checked

    say(f"rewriting {name} into its {model_form} form")
    rewritten, report = form_checked(module, name, model_form, [x for _, x in checks], reference=trained)
    if not report.changed:
        say(report.summary())
        return module, None
    return rewritten, report.to_dict(entries=False)


def check_int8_options(int8: Int8Options, precision: str, targets: Sequence[str]) -> None:
    """Refuse int8 options without int8, int8 without calibration data, and unknown modes."""
    from edgevit.exporters import exporter_module

    if precision != "int8":
        if int8.calibration is not None or int8.eval is not None or int8.mode is not None or int8.int8_io:
            raise InputError("--calibration, --eval, --int8-mode and --int8-io go with --precision int8")
        return
    if int8.calibration is None:
        raise InputError("--precision int8 needs calibration data: --calibration digits|FOLDER|FILE.npz")
    if not 0 <= int8.max_drop <= 100:
        raise InputError(f"--max-drop is in points of top-1 (0 to 100), not {int8.max_drop}")
    if int8.calibration_samples < 1 or int8.eval_samples < 1:
        raise InputError("calibration and held-out sample counts must be at least 1")
    if int8.int8_io and list(targets) != ["tflite"]:
        raise InputError("--int8-io is a TFLite option: use --target tflite")
    for target in targets:
        modes = exporter_module(target).INT8_MODES
        if int8.mode is not None and int8.mode not in modes:
            raise InputError(f"int8 mode {int8.mode!r} is not available for {target}: choose {', '.join(modes)}")


def int8_job(int8: Int8Options, shape: tuple[int, ...], mean, std, crop_pct: float,
             class_names: Sequence[str] | None, say: Progress) -> Int8Job:
    """Read the calibration (and held-out) samples once, for every target."""
    from .calibration import load_samples
    from .quantization import split_samples

    extra = int8.eval_samples if int8.eval is None else 0
    calibration = load_samples(int8.calibration, shape, mean, std, crop_pct, class_names=class_names,
                               limit=int8.calibration_samples + extra, progress=say)
    held_out = None if int8.eval is None else load_samples(
        int8.eval, shape, mean, std, crop_pct, class_names=class_names, limit=int8.eval_samples, progress=say)
    calibration, held_out = split_samples(calibration, held_out, int8.calibration_samples, int8.eval_samples)
    say(f"int8: {len(calibration)} calibration samples from {calibration.name}, "
        f"{len(held_out)} held-out samples from {held_out.name}")
    return Int8Job(int8, calibration, held_out)


def input_form_for(target: str, shape: tuple[int, ...], layout: str | None, image_input: bool | None,
                mean: Sequence[float], std: Sequence[float]) -> InputForm:
    """The input form ``target`` gets: the asked one, else the target's default (TFLite:
    NHWC pixels, the phone runtimes' form; others: the normalized NCHW tensor)."""
    if len(shape) != 4:  # not an image model: the tensor as it is
        if (layout is not None and parse_layout(layout) == "NHWC") or image_input:
            raise InputError("the model does not take images: --layout nhwc and --image-input apply to image models")
        return InputForm(mean=tuple(mean), std=tuple(std))
    app_default = target == "tflite"
    chosen = parse_layout(layout) if layout is not None else ("NHWC" if app_default else "NCHW")
    pixels = app_default if image_input is None else bool(image_input)
    if target == "coreml" and pixels and chosen == "NHWC":
        raise InputError("a Core ML image input is laid out by Core ML itself: drop --layout nhwc "
                         "(or --image-input) for coreml")
    return InputForm(chosen, pixels, tuple(mean), tuple(std))


def _num_classes(module: Any, shape: tuple[int, ...]) -> int:
    """Size of the model's output for one input (run once on zeros)."""
    torch = require("torch", "to export models")
    with torch.inference_mode():
        return int(module(torch.zeros(shape)).reshape(1, -1).shape[1])


def _trace(module: Any, form: InputForm, example: Any, name: str, say: Progress) -> tuple[Any, Any, Any]:
    """(module, example in ``form``, torch.export program) for one input form."""
    torch = require("torch", "to export models")
    from edgevit.native_torch import attention_path

    form_example = torch.from_numpy(form.from_normalized(example.numpy()))
    shape_text = "x".join(map(str, form_example.shape))
    say(f"tracing {name} at {shape_text} ({form.describe()}) with torch.export")
    try:
        with torch.inference_mode():
            module(form_example)
        with attention_path(module, native_ops=False):  # standard ops unless the exporter asks
            program = torch.export.export(module, (form_example,))
    except Exception as exc:
        raise ExportError(f"torch.export could not trace {name} at {shape_text}: {first_line(exc)}") from None
    return module, form_example, program


def model_input_shape(module: Any, spec: ModelSpec | None, name: str, image_size, image=None) -> tuple[int, ...]:
    """The batch-1 input shape to export at, checked against what the model accepts."""
    declared = getattr(module, "input_size", None)  # the module's own size wins over its spec's
    native = tuple(declared or (spec.input_size if spec else (3, 224, 224)))
    if len(native) != 3:  # not an image model
        if image_size is not None or image is not None:
            raise InputError(f"{name} takes {native}-shaped inputs, not images: drop the image size and image")
        return (1, *native)
    height, width = _image_hw(image_size, native[1:])
    if declared is not None or (spec is not None and spec.fixed_size):
        if (height, width) != native[1:]:
            raise InputError(f"{name} has position tables learned for {native[1]}x{native[2]} "
                             f"inputs; export it at that size, not {height}x{width}")
    else:
        multiple = spec.size_multiple if spec else 1
        if height % multiple or width % multiple or height <= 0 or width <= 0:
            raise InputError(f"image size {height}x{width} does not fit {name}: use multiples of {multiple}")
    return (1, native[0], height, width)


def torch_reference(module: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> module(x)`` on numpy arrays, under inference mode: the parity reference."""
    torch = require("torch", "to export models")

    def reference(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return reference


def _resolve_model(model: Any, weights: str | Path | None, say: Progress) -> tuple[ModelSpec | None, Any, str]:
    from .api import create_model

    if isinstance(model, str):
        spec = get_spec(model)
        say(f"building {model}" + (f" with weights {weights}" if weights else " (random weights)"))
        return spec, create_model(model, weights=weights), model
    if weights is not None:
        raise EdgeVitError("weights can only be given with a registered model name")
    if not hasattr(model, "forward"):
        raise InputError(f"expected a model name or a torch.nn.Module, got {type(model).__name__}")
    spec, name = registered_spec(model)
    return spec, model.eval(), name


def registered_spec(module: Any) -> tuple[ModelSpec | None, str]:
    """The spec and name of a module built by ``create_model`` (then perhaps fine-tuned);
    other modules have no spec and are named after their class."""
    name = getattr(module, "edgevit_name", None)
    if name:
        try:
            return get_spec(name), name
        except EdgeVitError:
            pass
    return None, name or type(module).__name__.lower()


def _export_one(target, exporter, request, final: Path, spec, verify: bool, checks, reference, load,
                say: Progress, fold_summary: dict[str, Any] | None = None, job: Int8Job | None = None,
                form_summary: dict[str, Any] | None = None) -> ExportResult:
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
                report = check_parity(runtime, reference, checks, request.precision)
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
        )
        result = ExportResult(target, final, request.precision, written=False, parity=report,
                              metadata=metadata.to_dict(), reparam=fold_summary, guard=guard, form=form_summary)
        if report is None or report.passed:
            exporter.write_metadata(staged, metadata)
            say(f"{target}: recording the content digest")
            result.metadata["integrity"] = {"sha256": _seal(staged, runtime, checks[0][1] if verify else None, load)}
            publish(staged, final)
            result.written = True
            result.size_bytes = artifact_size(final)
        result.seconds = time.perf_counter() - started
        return result


def _seal(staged: Path, verified, probe: np.ndarray | None, load) -> str:
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
