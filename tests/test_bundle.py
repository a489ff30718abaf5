"""``edgevit bundle``: the iOS and Android folders use the artifact's real names and sizes,
refuse artifacts in the wrong form, and match the examples in ``examples/ios`` and
``examples/android``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import edgevit
from edgevit.artifact.integrity import content_digest

from .conftest import assert_clean_failure, run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def constants(source: str) -> dict[str, str]:
    """``static let x = v`` (Swift) and ``const val X = v`` (Kotlin) -> {x: v} (quotes removed)."""
    found = re.findall(r"(?:static let|const val) (\w+) = ([^\n/]+?)\s*(?://|\n)", source)
    return {name: value.strip().strip('"') for name, value in found}


def test_ios_bundle_uses_the_packages_names_and_sizes(app_artifacts, tmp_path):
    artifact = app_artifacts[("edgenext_xx_small", "coreml", "fp32")]
    result = edgevit.bundle(artifact, "ios", tmp_path / "ios")
    assert result.files == ["EdgenextXxSmallClassifier.swift", "README.md", "edgenext_xx_small.mlpackage",
                            "labels.txt"]
    rt = edgevit.load(artifact)
    copied = edgevit.load(tmp_path / "ios" / "edgenext_xx_small.mlpackage")
    assert copied.integrity.status == "intact" and copied.integrity.actual == rt.integrity.actual
    swift = (tmp_path / "ios" / "EdgenextXxSmallClassifier.swift").read_text()
    found = constants(swift)
    spec = rt.spec.description
    assert found["modelName"] + ".mlpackage" in result.files
    assert found["inputName"] == spec.input[0].name == rt.inputs[0].name
    assert (int(found["inputHeight"]), int(found["inputWidth"])) == rt.inputs[0].shape[2:] == (256, 256)
    assert found["labelOutput"] == spec.predictedFeatureName
    assert found["scoresOutput"] == spec.predictedProbabilitiesName
    assert "class EdgenextXxSmallClassifier" in swift and "$" not in swift.replace("$0", "").replace("$1", "")
    assert (tmp_path / "ios" / "labels.txt").read_text().splitlines() == rt.classes


def test_android_bundle_uses_the_models_names_and_sizes(app_artifacts, tmp_path):
    artifact = app_artifacts[("slab_deit_tiny", "tflite", "fp16")]
    result = edgevit.bundle(artifact, "android", tmp_path / "android")
    kotlin = (tmp_path / "android" / "SlabDeitTinyClassifier.kt").read_text()
    found = constants(kotlin)
    rt = edgevit.load(tmp_path / "android" / found["MODEL_ASSET"])
    assert rt.integrity.status == "intact"
    assert found["INPUT_NAME"] == rt.inputs[0].name and found["OUTPUT_NAME"] == rt.outputs[0].name
    assert rt.inputs[0].shape == (1, int(found["INPUT_HEIGHT"]), int(found["INPUT_WIDTH"]), 3) == (1, 224, 224, 3)
    assert rt.outputs[0].shape == (1, int(found["NUM_CLASSES"]))
    assert rt.app_metadata["packed_files"] == ["labels.txt"]
    assert "$" not in kotlin


def test_examples_are_current_bundles(app_artifacts, tmp_path):
    """examples/ios and examples/android hold what ``edgevit bundle`` writes for edgenext_xx_small."""
    for platform, target, source in (("ios", "coreml", "EdgenextXxSmallClassifier.swift"),
                                     ("android", "tflite", "EdgenextXxSmallClassifier.kt")):
        edgevit.bundle(app_artifacts[("edgenext_xx_small", target, "fp32")], platform, tmp_path / platform)
        assert (EXAMPLES / platform / source).read_text() == (tmp_path / platform / source).read_text()
        assert (tmp_path / platform / "README.md").read_text() in (EXAMPLES / platform / "README.md").read_text()


def test_bundle_refuses_the_wrong_form(artifacts, app_artifacts, tmp_path):
    cases = [
        (artifacts["onnx"], "ios", "an iOS bundle takes a Core ML package"),
        (artifacts["coreml"], "ios", "is not an image-input classifier"),  # tensor input, no labels
        (artifacts["onnx"], "android", "an Android bundle takes a TFLite model"),
        (app_artifacts[("edgenext_xx_small", "coreml", "fp32")], "windows", "unknown platform 'windows'"),
    ]
    for artifact, platform, message in cases:
        out = tmp_path / f"out-{platform}"
        assert_clean_failure(run_cli("bundle", str(artifact), "--platform", platform, "--output", str(out)),
                             contains=message)
        assert not out.exists()
    no_labels = edgevit.export("edgenext_xx_small", "tflite", tmp_path, image_size=64)
    assert_clean_failure(run_cli("bundle", str(no_labels.path), "-p", "android", "-o", str(tmp_path / "x")),
                         contains="has no packed label file")
    nchw = edgevit.export("edgenext_xx_small", "tflite", tmp_path / "nchw", image_size=64, layout="nchw",
                          image_input=False, labels=[str(i) for i in range(1000)])
    assert_clean_failure(run_cli("bundle", str(nchw.path), "-p", "android", "-o", str(tmp_path / "x")),
                         contains="MediaPipe needs NHWC RGB pixels")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    artifact = app_artifacts[("edgenext_xx_small", "tflite", "fp32")]
    assert_clean_failure(run_cli("bundle", str(artifact), "-p", "android", "-o", str(busy)), contains="not an empty folder")
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    ok = run_cli("--json", "bundle", str(artifact), "-p", "android", "-o", str(tmp_path / "fresh"))
    assert ok.code == 0, ok.stderr
    assert content_digest([(tmp_path / "fresh" / "edgenext_xx_small.tflite").read_bytes()]) \
        == content_digest([artifact.read_bytes()])
