"""int8 export with an accuracy guard that never ships a broken model.

The exporter quantizes the verified fp32 artifact with its target's own tools (ONNX
Runtime, ai-edge-quantizer, coremltools). The guard then runs the int8 artifact on
held-out samples next to the model as trained and measures top-1 agreement, top-1 accuracy
(when labels are known), the output SNR, and the drop with its 95% interval
(:mod:`edgevit.int8.interval`). It never scores a calibration sample, nor one its source
says was trained on; with training data only it scores shifted copies of the training images
not calibrated on, says so, and holds the stricter budget ``TRAINING_ONLY_BUDGET`` (see
docs/int8.md for the measurement behind it). When the drop
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
from .interval import disagreement_interval, paired_drop_interval
from .latency import side_by_side
from .sensitivity import rank_layers

DEFAULT_MAX_DROP = 1.0  # points of top-1
# The fallback keeps at most this share of the weight layers in float: beyond it the
# artifact is no longer an int8 model (size and speed gone), so the guard fails instead.
MAX_FLOAT_FRACTION = 0.25
# What the held-out samples are (``GuardReport.basis``)
EVAL_DATA = "eval data"  # given apart from the calibration data, not marked as training data
HELD_OUT_SPLIT = "held-out split"  # the calibration source's samples that it says were not trained on
TRAINING_ONLY = "training data only"  # nothing unseen: shifted copies of training images
# With training data only, the drop measured is held to this share of the budget: on
# models trained briefly, int8 lost several times more on unseen images than on training
# images or shifted copies of them (docs/int8.md, "The guard's data").
TRAINING_ONLY_BUDGET = 0.5
SHIFT_FRACTION = 1 / 16  # shifted copies move up to this share of the image side


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
    interval: tuple[float, float] = (0.0, 0.0)  # 95% interval of the drop, points


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
    basis: str = EVAL_DATA  # what the held-out samples are: EVAL_DATA, HELD_OUT_SPLIT or TRAINING_ONLY
    budget: float | None = None  # the drop allowed: max_drop, or less with training data only
    latency: dict[str, Any] | None = None  # int8 against fp32 on this machine (edgevit.int8.latency)

    def __post_init__(self) -> None:
        if self.budget is None:
            self.budget = self.max_drop * (TRAINING_ONLY_BUDGET if self.basis == TRAINING_ONLY else 1.0)

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
            "drop_interval": list(final.interval) if final else None, "interval_level": 0.95,
            "held_out_basis": self.basis, "budget": self.budget, "latency": self.latency,
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
        options.eval, shape, mean, std, crop_pct, class_names=class_names, limit=options.eval_samples, progress=say,
        what="held-out data (--eval)")
    calibration, held_out, basis = split_samples(calibration, held_out, options.calibration_samples,
                                                 options.eval_samples)
    say(f"int8: {len(calibration)} calibration samples from {calibration.name}, "
        f"{len(held_out)} held-out samples from {held_out.name} ({basis})")
    if basis == TRAINING_ONLY:
        say(f"int8: training data only: the guard scores shifted copies of training images and holds the drop to "
            f"{TRAINING_ONLY_BUDGET:g} of the budget; give --eval DATA (images never trained on) for an honest estimate")
    return Int8Job(options, calibration, held_out, basis)


def split_samples(calibration: SampleSet, held_out: SampleSet | None, calibration_count: int,
                  eval_count: int) -> tuple[SampleSet, SampleSet, str]:
    """(calibration samples, held-out samples, what the held-out ones are). Calibration takes
    the calibration data's first ``calibration_count`` samples (those marked as training first).
    The guard scores ``held_out`` (``eval``) less any sample marked as training; else the
    calibration data's samples marked as not trained on; else, with training data only
    (unmarked data counts as training data, as calibration data usually is), shifted copies of
    the training samples not calibrated on."""
    if held_out is not None:
        calibration = calibration.subset(0, calibration_count)
        unseen = held_out.take(np.flatnonzero(~held_out.training)) if held_out.training is not None else held_out
        if len(unseen):  # eval data counts as unseen unless it says otherwise
            return calibration, unseen.subset(0, eval_count), EVAL_DATA
        return calibration, shifted_copies(held_out.subset(0, eval_count)), TRAINING_ONLY
    if len(calibration) < 2:
        raise InputError(f"calibration data {calibration.name} holds {len(calibration)} sample(s): the guard "
                         "needs held-out samples too (give more data or --eval DATA)")
    marks = _marks(calibration)
    trained, unseen = np.flatnonzero(marks), np.flatnonzero(~marks)
    if len(unseen) and len(trained):
        return calibration.take(trained[:calibration_count]), calibration.take(unseen[:eval_count]), HELD_OUT_SPLIT
    used = min(calibration_count, len(calibration) // 2)  # never all of it: the rest is held out
    rest = calibration.subset(used, used + eval_count)
    if len(unseen):  # all of it held out from training: calibrate on the first, score the rest
        return calibration.subset(0, used), rest, HELD_OUT_SPLIT
    return calibration.subset(0, used), shifted_copies(rest), TRAINING_ONLY


def _marks(samples: SampleSet) -> np.ndarray:
    """True where a sample counts as training data (unmarked samples do)."""
    return np.ones(len(samples), bool) if samples.training is None else samples.training.astype(bool)


def shifted_copies(samples: SampleSet, seed: int = 0) -> SampleSet:
    """The samples each moved by up to ``SHIFT_FRACTION`` of the side (edges repeated, a fixed
    seed): images the model was not trained on exactly, with the training images' labels."""
    inputs = samples.inputs
    step = max(1, round(min(inputs.shape[-2:]) * SHIFT_FRACTION))
    rng = np.random.default_rng(seed)
    moved = np.empty_like(inputs)
    for i, image in enumerate(inputs):
        dy, dx = rng.integers(-step, step + 1, 2)
        dy, dx = (dy, dx) if (dy, dx) != (0, 0) else (step, 0)
        padded = np.pad(image, ((0, 0), (step, step), (step, step)), mode="edge")
        moved[i] = padded[:, step + dy: step + dy + image.shape[1], step + dx: step + dx + image.shape[2]]
    return SampleSet(f"{samples.name} (shifted copies)", moved, samples.labels, samples.training)


def measure(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None,
            fp32_accuracy: float | None) -> tuple[float, float | None, float, float, tuple[float, float]]:
    """(top-1 agreement, accuracy, SNR in dB, drop in points, its 95% interval) of ``outputs``
    against ``reference``."""
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
        interval = paired_drop_interval(reference.argmax(1) == labels, outputs.argmax(1) == labels)
    else:
        drop = 100 * (1 - agreement)
        interval = disagreement_interval(outputs.argmax(1) == reference.argmax(1))
    return agreement, accuracy, snr, drop, interval


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
        agreement, accuracy, snr, drop, interval = measure(outputs, reference, labels, report.fp32_accuracy)
        passed = drop <= report.budget + 1e-9
        report.trials.append(Trial(list(plan.keep_float), agreement, accuracy, snr, drop, passed, interval))
        say(f"int8 with {len(plan.keep_float)} layer(s) in float: top-1 agreement {agreement:.3f}"
            + (f", accuracy {accuracy:.3f}" if accuracy is not None else "")
            + f", SNR {snr:.1f} dB, drop {drop:.2f} points (95% interval {interval[0]:.2f} to {interval[1]:.2f}; "
              f"budget {report.budget:g}{', training data only' if report.basis == TRAINING_ONLY else ''})")
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
    basis: str = EVAL_DATA  # what the held-out samples are (EVAL_DATA, HELD_OUT_SPLIT, TRAINING_ONLY)


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
        float_by_default=list(exporter.INT8_FLOAT_BY_DEFAULT), fp32_size_bytes=artifact_size(float_path),
        basis=job.basis)
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
        report.latency = _latency(target, load, float_path, runtime, held_out[:1], say)
    finally:
        _remove(float_path)
    return runtime, report


def _latency(target: str, load: Callable[..., Any], float_path: Path, runtime: Any, x: np.ndarray,
             say: Callable[[str], None]) -> dict[str, Any] | None:
    """int8 against fp32 on this machine, side by side; None where it says nothing of the
    target's speed (Core ML away from macOS runs through edgevit's reference interpreter)."""
    if getattr(runtime, "uses_reference", False) or not getattr(runtime, "can_run", True):
        return None
    say(f"{target}: timing int8 against fp32 on this machine")
    latency = side_by_side(load(float_path), runtime, x)
    say(f"{target}: int8 {latency['int8_ms']:.2f} ms, fp32 {latency['fp32_ms']:.2f} ms "
        f"(int8/fp32 {latency['ratio']}) on {latency['machine']} with {', '.join(latency['cpu_features']) or 'no'} "
        "int8 instruction sets")
    return latency


_PROBE_SAMPLES = 32  # held-out samples the sensitivity ranking runs on
_BATCH = 32  # samples the model as trained runs at once


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
