"""int8 export with an accuracy guard that never ships a broken model.

The exporter quantizes the verified fp32 artifact with its target's own tools (ONNX
Runtime, ai-edge-quantizer, coremltools). The guard then runs the int8 artifact on
held-out samples (never the calibration ones) next to the model as trained and measures
top-1 agreement, top-1 accuracy (when labels are known) and the output SNR. When the drop
(points of accuracy with labels, of agreement without) exceeds the budget, layers are
ranked by sensitivity (:mod:`edgevit.int8.sensitivity`) and the worst are kept in float, 1, 2, 4,
... of them, re-quantizing each time, until the budget holds or the most sensitive quarter
of the layers is float; then nothing is written.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError
from ..paths import artifact_size
from .calibration import DEFAULT_CALIBRATION_SAMPLES, DEFAULT_EVAL_SAMPLES, SampleSet, load_samples
from .sensitivity import rank_layers

DEFAULT_MAX_DROP = 1.0  # points of top-1
# The fallback keeps at most this share of the weight layers in float: beyond it the
# artifact is no longer an int8 model (size and speed gone), so the guard fails instead.
MAX_FLOAT_FRACTION = 0.25


@dataclass
class Int8Options:
    """What the user asked for: data, budget and the target's int8 mode."""

    calibration: Any
    eval: Any = None  # held-out data; default: the calibration data's samples after the calibration ones
    max_drop: float = DEFAULT_MAX_DROP
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    mode: str | None = None  # None: the target's default (exporters' INT8_MODES[0])
    int8_io: bool = False  # TFLite: int8 input and output tensors


@dataclass
class Int8Plan:
    """One quantizer run: calibration inputs in the artifact's form, and what stays float."""

    calibration: np.ndarray
    mode: str
    keep_float: tuple[str, ...] = ()  # torch.export node names (``linear_3``) of layers kept in float
    int8_io: bool = False


@dataclass
class Trial:
    """The int8 artifact measured on the held-out samples, with ``kept`` layers in float."""

    kept: list[str]
    agreement: float
    accuracy: float | None
    snr_db: float
    drop: float
    passed: bool


@dataclass
class GuardReport:
    """Every quantization the guard tried, what it kept in float and why, and the verdict."""

    target: str
    mode: str
    max_drop: float
    calibration: dict[str, Any]
    held_out: dict[str, Any]
    fp32_accuracy: float | None
    float_by_default: list[str]
    trials: list[Trial] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)  # {layer, module, kind, snr_db, reason}
    fp32_size_bytes: int = 0

    @property
    def passed(self) -> bool:
        return bool(self.trials) and self.trials[-1].passed

    @property
    def final(self) -> Trial | None:
        return self.trials[-1] if self.trials else None

    def summary(self, size_bytes: int) -> dict[str, Any]:
        """The form stored in the artifact's metadata (``quantization``)."""
        final = self.final
        return {
            "precision": "int8", "mode": self.mode, "status": "passed" if self.passed else "failed",
            "max_drop": self.max_drop, "calibration": self.calibration, "held_out": self.held_out,
            "fp32_accuracy": self.fp32_accuracy,
            "top1_agreement": final.agreement if final else None,
            "accuracy": final.accuracy if final else None,
            "snr_db": final.snr_db if final and np.isfinite(final.snr_db) else None,
            "drop": final.drop if final else None,
            "float_by_default": self.float_by_default, "kept_float": self.kept,
            "size_bytes": size_bytes, "fp32_size_bytes": self.fp32_size_bytes,
            "trials": len(self.trials),
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def int8_job(options: Int8Options, shape: tuple[int, ...], mean: Sequence[float], std: Sequence[float],
             crop_pct: float, class_names: Sequence[str] | None, say: Callable[[str], None]) -> "Int8Job":
    """Read the calibration (and held-out) samples once, for every target."""
    extra = options.eval_samples if options.eval is None else 0
    calibration = load_samples(options.calibration, shape, mean, std, crop_pct, class_names=class_names,
                               limit=options.calibration_samples + extra, progress=say)
    held_out = None if options.eval is None else load_samples(
        options.eval, shape, mean, std, crop_pct, class_names=class_names, limit=options.eval_samples, progress=say)
    calibration, held_out = split_samples(calibration, held_out, options.calibration_samples, options.eval_samples)
    say(f"int8: {len(calibration)} calibration samples from {calibration.name}, "
        f"{len(held_out)} held-out samples from {held_out.name}")
    return Int8Job(options, calibration, held_out)


def split_samples(calibration: SampleSet, held_out: SampleSet | None, calibration_count: int,
                  eval_count: int) -> tuple[SampleSet, SampleSet]:
    """(calibration, held-out) samples: the first ``calibration_count`` for calibration, and
    ``held_out`` or, without it, the calibration data's next ``eval_count`` samples."""
    if held_out is not None:
        return calibration.subset(0, calibration_count), held_out.subset(0, eval_count)
    if len(calibration) < 2:
        raise InputError(f"calibration data {calibration.name} holds {len(calibration)} sample(s): the guard "
                         "needs held-out samples too (give more data or --eval DATA)")
    used = min(calibration_count, len(calibration) // 2)  # never all of it: the rest is held out
    return calibration.subset(0, used), calibration.subset(used, used + eval_count)


def measure(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None,
            fp32_accuracy: float | None) -> tuple[float, float | None, float, float]:
    """(top-1 agreement, accuracy, SNR in dB, drop in points) of ``outputs`` against ``reference``."""
    outputs = np.nan_to_num(np.asarray(outputs, dtype=np.float64).reshape(len(reference), -1), nan=-np.inf)
    reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    agreement = float(np.mean(outputs.argmax(1) == reference.argmax(1)))
    accuracy = None if labels is None else float(np.mean(outputs.argmax(1) == labels))
    noise = float(np.sum((np.where(np.isfinite(outputs), outputs, 0) - reference) ** 2))
    if not np.all(np.isfinite(outputs)):
        noise = float("inf")
    signal = float(np.sum(reference ** 2))
    if noise == 0:
        snr = float("inf")
    elif signal == 0 or not np.isfinite(noise):
        snr = float("-inf")
    else:
        snr = float(10 * np.log10(signal / noise))
    if labels is not None and fp32_accuracy is not None:
        drop = 100 * (fp32_accuracy - accuracy)
    else:
        drop = 100 * (1 - agreement)
    return agreement, accuracy, snr, drop


def guarded_quantize(quantize: Callable[[Int8Plan], Any], plan: Int8Plan, report: GuardReport,
                     held_out: np.ndarray, reference: np.ndarray, labels: np.ndarray | None,
                     rank: Callable[[], Sequence[Any]], say: Callable[[str], None]) -> Any:
    """Quantize with ``plan``; while the drop exceeds the budget, keep the worst-ranked
    layers in float (1, 2, 4, ...) and quantize again. ``quantize(plan)`` writes the artifact
    and returns it loaded (a Runtime); ``rank()`` gives layers worst first. Returns the last
    artifact loaded; ``report`` holds every try."""
    ranking: Sequence[Any] | None = None
    count = 0
    while True:
        runtime = quantize(plan)
        outputs = np.concatenate([np.asarray(runtime.run(x[None])).reshape(1, -1) for x in held_out])
        agreement, accuracy, snr, drop = measure(outputs, reference, labels, report.fp32_accuracy)
        passed = drop <= report.max_drop + 1e-9
        report.trials.append(Trial(list(plan.keep_float), agreement, accuracy, snr, drop, passed))
        say(f"int8 with {len(plan.keep_float)} layer(s) in float: top-1 agreement {agreement:.3f}"
            + (f", accuracy {accuracy:.3f}" if accuracy is not None else "")
            + f", SNR {snr:.1f} dB, drop {drop:.2f} points (budget {report.max_drop:g})")
        if passed:
            return runtime
        if ranking is None:
            say("ranking layers by sensitivity (each quantized alone)")
            ranked = list(rank())
            ranking = ranked[:math.ceil(len(ranked) * MAX_FLOAT_FRACTION)]
        if count >= len(ranking):
            return runtime
        count = min(len(ranking), max(1, 2 * count))
        chosen = ranking[:count]
        report.kept = [dict(entry.to_dict(), reason=f"sensitivity rank {i + 1} of {len(ranking)}: output SNR "
                            f"{entry.snr_db:.1f} dB with only this layer in int8")
                       for i, entry in enumerate(chosen)]
        plan = Int8Plan(plan.calibration, plan.mode, tuple(e.name for e in chosen), plan.int8_io)


@dataclass
class Int8Job:
    """An int8 export's samples, split once and shared by every target."""

    options: Int8Options
    calibration: SampleSet
    held_out: SampleSet


def quantize_artifact(target: str, exporter: Any, request: Any, staged: Path, job: Int8Job,
                      reference: Callable[[np.ndarray], np.ndarray], load: Callable[..., Any],
                      say: Callable[[str], None]) -> tuple[Any, GuardReport]:
    """Convert ``request`` to fp32 beside ``staged``, quantize it into ``staged`` under the
    guard, and return (the loaded int8 artifact, the guard's report)."""
    form = request.form
    float_path = staged.parent / f"fp32-{staged.name}"
    say(f"{request.model_name}: converting to fp32 first")
    exporter.convert(replace(request, precision="fp32"), float_path)
    held_out = form.from_normalized(job.held_out.inputs)
    say(f"running the model as trained on {len(held_out)} held-out samples")
    expected = np.concatenate([reference(held_out[i:i + _BATCH]) for i in range(0, len(held_out), _BATCH)])
    labels = job.held_out.labels
    fp32_accuracy = None if labels is None else float(np.mean(
        np.asarray(expected).reshape(len(held_out), -1).argmax(1) == labels))
    mode = job.options.mode or exporter.INT8_MODES[0]
    report = GuardReport(
        target=target, mode=mode, max_drop=job.options.max_drop, calibration=job.calibration.describe(),
        held_out=job.held_out.describe(), fp32_accuracy=fp32_accuracy,
        float_by_default=list(exporter.INT8_FLOAT_BY_DEFAULT), fp32_size_bytes=artifact_size(float_path))
    plan = Int8Plan(form.from_normalized(job.calibration.inputs), mode, (), job.options.int8_io)

    def quantize(plan: Int8Plan):
        _remove(staged)
        say(f"quantizing to int8 ({mode}, {len(plan.calibration)} calibration samples"
            + (f", {len(plan.keep_float)} layer(s) kept float)" if plan.keep_float else ")"))
        exporter.quantize(float_path, staged, plan, request)
        return load(staged)

    def rank():
        return rank_layers(request.model, request.program, plan.calibration, held_out[:_PROBE_SAMPLES],
                           weights_only=mode != "full")

    try:
        runtime = guarded_quantize(quantize, plan, report, held_out, expected, labels, rank, say)
    finally:
        _remove(float_path)
    return runtime, report


_PROBE_SAMPLES = 32  # held-out samples the sensitivity ranking runs on
_BATCH = 32  # samples the model as trained runs at once


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
