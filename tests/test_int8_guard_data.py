"""The int8 guard on data it may score: never a calibration image, never one its source says
was trained on; with training data only it says so, holds a stricter budget, and reports the
drop with a 95% interval and the int8/fp32 latency it measured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import SMALL, run_cli

SHAPE, MEAN, STD = (1, 3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _pixels(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)


def _folder(root, names, count=4):
    from PIL import Image

    for name in names:
        for i, image in enumerate(_pixels(count, seed=len(name))):
            (root / name / "3").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / name / "3" / f"{i}.png")


def test_sources_say_which_images_were_trained_on(tmp_path):
    from edgevit.errors import InputError
    from edgevit.int8.calibration import load_samples

    def read(data, limit=64):
        return load_samples(data, SHAPE, MEAN, STD, limit=limit)

    assert read({"images": _pixels(6)}).use == "not said"
    assert read({"images": _pixels(6), "split": "train"}).use == "training"
    np.savez(tmp_path / "test.npz", images=_pixels(6), split="test")
    assert read(tmp_path / "test.npz").use == "held out"
    marks = np.array([1, 1, 0, 1, 0, 0], bool)
    np.savez(tmp_path / "mixed.npz", images=_pixels(6), labels=np.arange(6), train=marks)
    mixed = read(tmp_path / "mixed.npz", limit=2)  # the bound holds for each kind: 2 trained, 2 not
    np.testing.assert_array_equal(mixed.training, [True, True, False, False])
    np.testing.assert_array_equal(mixed.labels, [0, 1, 2, 4])
    _folder(tmp_path / "a", ["train"])
    assert read(tmp_path / "a" / "train").use == "training"
    _folder(tmp_path / "b", ["train", "val"])
    both = read(tmp_path / "b")
    assert both.use == "mixed" and both.training.sum() == 4 and list(both.labels) == [3] * 8
    with pytest.raises(InputError, match="'split' must be one of"):
        read({"images": _pixels(2), "split": "yesterday"})


def test_the_guard_never_scores_calibration_or_training_images():
    from edgevit.int8.calibration import SampleSet
    from edgevit.int8.guard import EVAL_DATA, HELD_OUT_SPLIT, TRAINING_ONLY, split_samples

    inputs = np.random.default_rng(0).normal(size=(40, 3, 32, 32)).astype(np.float32)
    marks = np.arange(40) % 4 != 0  # every fourth image held out from training
    calibration, held, basis = split_samples(SampleSet("s", inputs, None, marks), None, 8, 100)
    assert basis == HELD_OUT_SPLIT and len(held) == 10 and len(calibration) == 8
    assert _rows(held.inputs) <= _rows(inputs[~marks]) and not _rows(calibration.inputs) & _rows(held.inputs)

    calibration, held, basis = split_samples(SampleSet("s", inputs, None, ~marks | True), None, 8, 100)
    assert basis == TRAINING_ONLY  # all of it trained on
    calibration, held, basis = split_samples(SampleSet("s", inputs, None, marks & False), None, 8, 100)
    assert basis == HELD_OUT_SPLIT and len(calibration) == 8 and len(held) == 32  # none of it trained on
    assert not _rows(calibration.inputs) & _rows(held.inputs)

    calibration, held, basis = split_samples(SampleSet("s", inputs), None, 8, 100)  # says nothing: training
    assert basis == TRAINING_ONLY and len(held) == 32 and held.name.endswith("(shifted copies)")
    assert not _rows(held.inputs) & _rows(inputs)  # none of the source's images is scored

    given = SampleSet("eval", inputs[:5])
    assert split_samples(SampleSet("s", inputs), given, 8, 100)[2] == EVAL_DATA


def _rows(array: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in array}


def test_training_data_only_is_said_held_to_a_stricter_budget_and_timed(digits_model, tmp_path):
    """The issue's failure in small: calibration = the training images, no eval data. The
    old guard scored the training images after the 64 it calibrated on."""
    import edgevit
    from edgevit.int8.calibration import SampleSet
    from edgevit.int8.guard import TRAINING_ONLY_BUDGET

    model, data = digits_model
    result = edgevit.export(model, "onnx", tmp_path, image_size=SMALL, precision="int8", mean=data.mean,
                            std=data.std, calibration={"images": data.x_train, "labels": data.y_train})
    guard = result.guard
    scored_before = SampleSet("mapping", data.x_train[64:320], data.y_train[64:320]).digest
    assert guard.held_out["sha256"] != scored_before and guard.held_out["count"] == 256
    assert guard.basis == "training data only" and guard.budget == TRAINING_ONLY_BUDGET * guard.max_drop
    low, high = guard.final.interval
    assert low <= guard.final.drop <= high and high > low
    stored = result.metadata["quantization"]
    assert stored["held_out_basis"] == "training data only" and stored["drop_interval"] == [low, high]
    assert stored["latency"]["fp32_ms"] > 0 and stored["latency"]["ratio"] > 0
    shown = run_cli("info", str(result.path))
    assert shown.code == 0, shown.stderr
    assert "on training data only" in shown.stdout and "95% interval" in shown.stdout
    assert "latency at export: int8" in shown.stdout
    assert json.loads(run_cli("info", str(result.path), "--json").stdout)["metadata"]["quantization"]["budget"] \
        == guard.budget
