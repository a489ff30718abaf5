"""What each target gets from one export: its file name, its input form and its int8 modes,
checked before any long work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from edgevit.exporters import artifact_suffix, exporter_module

from ..artifact.input_form import InputForm, parse_layout
from ..errors import InputError
from ..int8.guard import Int8Options


def output_path(output: str | Path, model_name: str, target: str, precision: str) -> Path:
    """``output`` is a directory (the file is named after the model) or a file with the target's suffix."""
    output = Path(output)
    suffix = artifact_suffix(target)
    if output.suffix.lower() == suffix:
        return output
    stem = model_name if precision == "fp32" else f"{model_name}_{precision}"
    return output / f"{stem}{suffix}"


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


def check_int8_options(int8: Int8Options, precision: str, targets: Sequence[str]) -> None:
    """Refuse int8 options without int8, int8 without calibration data, and unknown modes."""
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


MOBILE_EXECUTION_PROVIDERS = ("nnapi", "coreml")  # ONNX Runtime Mobile's: both get the mobile form


def check_ep(ep: str | None, targets: list[str], target_form: bool, native_ops: bool) -> None:
    """An ``ep`` (the mobile form's execution provider) that fits the other options, or InputError."""
    if ep is None:
        return
    if ep not in MOBILE_EXECUTION_PROVIDERS:
        raise InputError(f"unknown execution provider {ep!r}: choose {' or '.join(MOBILE_EXECUTION_PROVIDERS)}")
    if targets != ["onnx"]:
        raise InputError("--ep picks ONNX Runtime Mobile's operators: it goes with --target onnx")
    if not target_form or native_ops:
        raise InputError("--ep is a target form: it cannot go with " + ("--native-ops" if native_ops
                                                                       else "--no-target-form"))
