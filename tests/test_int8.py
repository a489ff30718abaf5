"""int8 on every target, judged by the accuracy guard on a model trained on digits.

A short training run (edgenext_xx_small at 64x64, 10 classes) gives real weights: random
weights prove parity, not accuracy. Calibration uses training images; the guard measures
on the held-out test split, never on the calibration samples.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import INT8_EXPORTS, SMALL, assert_clean_failure, export_int8, run_cli

TARGETS = ("onnx", "tflite", "coreml")
# (target, int8 mode) -> the least fp32 size / int8 size measured for this 10-class model.
# Every default mode is at least 3.5x. TFLite's static int8 needs a float scale and an int64
# zero point per weight channel; the zero-point vectors are stored once per channel count
# (exporters/tflite.py). Core ML W8A8 adds fp16 scales and quantize/dequantize ops; ONNX
# dynamic keeps convolution weights float (onnxruntime prepacks constant weights only).
MIN_SIZE_RATIO = {("onnx", "full"): 3.5, ("onnx", "dynamic"): 2.8, ("tflite", "full"): 3.5,
                  ("tflite", "dynamic"): 3.5, ("coreml", "weights"): 3.5, ("coreml", "palettize"): 3.5,
                  ("coreml", "full"): 3.3}


@pytest.mark.parametrize("target, mode", INT8_EXPORTS)
def test_int8_meets_the_budget_and_is_much_smaller(int8_artifacts, target, mode):
    result = int8_artifacts[(target, mode)]
    guard = result.guard
    assert result.written and guard.passed and guard.mode == mode
    final = guard.final
    assert guard.fp32_accuracy > 0.9  # trained, not random
    assert final.accuracy >= guard.fp32_accuracy - 0.01
    assert guard.held_out["count"] == 256 and guard.calibration["count"] == 64
    assert guard.fp32_size_bytes / result.size_bytes >= MIN_SIZE_RATIO[(target, mode)]
    stored = result.metadata["quantization"]
    assert stored["status"] == "passed" and stored["calibration"]["sha256"] == guard.calibration["sha256"]
    assert stored["precision"] == "int8" and result.metadata["precision"] == "int8"


def test_tflite_int8_of_an_unfolded_edgenext_loads(digits_model, tmp_path):
    """Without re-parameterization litert-torch folds each layer scale into its Linear with a
    (1, channels) bias, which ai-edge-quantizer quantized per channel along the axis of size
    1: LiteRT refused the artifact at load ("num_scales must be 1 ... but got 168")."""
    import edgevit

    model, data = digits_model
    result = export_int8(model, data, "tflite", tmp_path, reparam=False)
    assert result.written and result.guard.passed and not result.guard.kept
    runtime = edgevit.load(result.path)
    assert runtime.run(np.full(runtime.inputs[0].shape, 128, np.float32)).shape == (1, 10)


def test_int8_io_gives_tflite_int8_tensors(digits_model, tmp_path):
    import edgevit

    model, data = digits_model
    result = export_int8(model, data, "tflite", tmp_path, int8_io=True)
    assert result.written and result.guard.passed
    runtime = edgevit.load(result.path)
    assert runtime.inputs[0].dtype == "int8" and runtime.outputs[0].dtype == "int8"
    pixels = np.full(runtime.inputs[0].shape, 128, np.float32)  # float pixels are quantized as an app would
    assert runtime.run(pixels).shape == (1, 10)


def test_info_shows_the_int8_report(int8_artifacts):
    path = int8_artifacts[("onnx", "full")].path
    shown = run_cli("info", str(path))
    assert shown.code == 0, shown.stderr
    assert "int8 (full)" in shown.stdout and "calibration: mapping, 64 samples" in shown.stdout
    assert "held-out accuracy" in shown.stdout
    as_json = json.loads(run_cli("info", str(path), "--json").stdout)
    assert as_json["metadata"]["quantization"]["held_out"]["count"] == 256


def test_the_int8_artifact_runs_like_any_other(int8_artifacts, digits_model):
    import edgevit

    _, data = digits_model
    runtime = edgevit.load(int8_artifacts[("onnx", "full")].path)
    logits = np.concatenate([runtime.run(x[None]) for x in data.x_test[:50]])
    assert np.mean(logits.argmax(1) == data.y_test[:50]) > 0.9


def _outliers_through_the_norm(model):
    """The model with its classifier fed outliers through the last LayerNorm's affine, its
    float output unchanged: one constant 50 feeding the head through a zero weight (an
    activation outlier, which ruins a per-tensor input scale) and one weight of 30 fed by
    a constant 0 (a weight outlier, which ruins its row's per-channel scale)."""
    import copy

    import torch

    fragile = copy.deepcopy(model)
    with torch.no_grad():
        fragile.norm.weight[[0, 1]] = 0.0
        fragile.norm.bias[0], fragile.norm.bias[1] = 50.0, 0.0
        fragile.head.weight[:, 0] = 0.0
        fragile.head.weight[:, 1] = 30.0
    return fragile


def _sensitive_copy(model):
    """The model with a classifier that int8 breaks and its float predictions unchanged: 30
    added to one column of the head's weights, the same for every class (the logits all
    move together, so softmax and top-1 do not change), an outlier in every row that ruins
    the row's per-channel int8 scale. Re-parameterization cannot remove it."""
    import copy

    import torch

    fragile = copy.deepcopy(model)
    with torch.no_grad():
        fragile.head.weight[:, 1] += 30.0
    return fragile


@pytest.mark.parametrize("target", TARGETS)
def test_a_sensitive_layer_is_found_and_kept_float(digits_model, tmp_path, target):
    model, data = digits_model
    result = export_int8(_sensitive_copy(model), data, target, tmp_path)
    guard = result.guard
    assert result.written and guard.passed
    assert not guard.trials[0].passed  # the fragile head breaks plain int8 ...
    kept = [entry["module"] for entry in guard.kept]
    assert kept and kept[0].endswith("head")  # ... and the ranking puts it first
    assert result.metadata["quantization"]["kept_float"][0]["reason"].startswith("sensitivity rank 1")


def test_folding_the_layernorm_affine_cures_outliers_it_carried(digits_model, tmp_path):
    """Outliers that are products of the last LayerNorm's affine and the head's weights (a
    0 weight times 50, 30 times a 0 weight) vanish when the affine folds into the head:
    plain int8 meets the budget with nothing kept in float."""
    model, data = digits_model
    result = export_int8(_outliers_through_the_norm(model), data, "onnx", tmp_path)
    assert result.written and result.guard.trials[0].passed and not result.guard.kept


def test_an_impossible_budget_writes_nothing_and_exits_1(tmp_path):
    """Random weights, unlabelled digits: int8 flips some top-1 answers (the drop is in
    points of agreement), and no quarter of the layers in float flips them all back."""
    from sklearn.datasets import load_digits

    np.savez(tmp_path / "digits.npz", images=np.rint(load_digits().images[:96] * (255 / 16)).astype(np.uint8))
    out = tmp_path / "out"
    result = run_cli("export", "--model", "edgenext_xx_small", "--image-size", str(SMALL), "--target", "onnx",
                     "--precision", "int8", "--calibration", str(tmp_path / "digits.npz"), "--calibration-samples",
                     "32", "--max-drop", "0", "--output", str(out))
    assert result.code == 1, result.stderr
    assert "int8 accuracy guard" in result.stdout and "nothing written" in result.stdout
    assert not any(out.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--precision", "int8"], "needs calibration data"),
    (["--calibration", "digits"], "go with --precision int8"),
    (["--precision", "int8", "--calibration", "nowhere"], "calibration data not found"),
    (["--precision", "int8", "--calibration", "digits", "--int8-mode", "palettize"], "not available for onnx"),
    (["--precision", "int8", "--calibration", "digits", "--int8-io"], "TFLite option"),
])
def test_int8_usage_errors_are_one_line(tmp_path, args, message):
    result = run_cli("export", "--model", "edgenext_xx_small", "--image-size", str(SMALL), "--target", "onnx",
                     "--output", str(tmp_path / "out"), *args)
    assert_clean_failure(result, 2, message)


def test_calibration_sources_read_alike(tmp_path):
    """digits, an .npz of its pixels and a class-folder of PNGs give the same inputs and labels."""
    from edgevit.int8.calibration import load_samples
    from PIL import Image
    from sklearn.datasets import load_digits

    shape, mean, std = (1, 3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    digits = load_samples("digits", shape, mean, std, limit=12)
    pixels = np.rint(load_digits().images[:12] * (255 / 16)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", images=pixels, labels=digits.labels)
    from_npz = load_samples(tmp_path / "d.npz", shape, mean, std, limit=12)
    for i, (image, label) in enumerate(zip(pixels, digits.labels)):
        (tmp_path / "folder" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "folder" / str(label) / f"{i:02d}.png")
    from_folder = load_samples(tmp_path / "folder", shape, mean, std, limit=12)
    assert from_npz.digest == digits.digest
    order = np.argsort([f"{label}/{i:02d}" for i, label in enumerate(digits.labels)])
    np.testing.assert_array_equal(from_folder.inputs, digits.inputs[order])
    np.testing.assert_array_equal(from_folder.labels, digits.labels[order])


def test_a_hostile_npz_is_refused_before_allocating(tmp_path):
    import zipfile

    from edgevit.int8.calibration import load_samples
    from edgevit.errors import InputError

    header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.uint8))
    header["shape"] = (1 << 20, 1 << 12, 1 << 12, 3)
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as archive, archive.open("images.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)
        member.write(b"\0" * 64)
    with pytest.raises(InputError, match="claims"):
        load_samples(tmp_path / "bomb.npz", (1, 3, 32, 32), (0.5,) * 3, (0.25,) * 3, limit=8)
