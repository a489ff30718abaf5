"""Web bundles: written and checked like the app bundles, then run in headless Chromium
(MediaPipe Tasks for TFLite, onnxruntime-web for ONNX) and compared with ``edgevit predict``."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from .conftest import assert_clean_failure, run_cli
from .web_browser import missing, page_result, serving


def _bundle(artifact, tmp_path, name="web"):
    result = run_cli("bundle", str(artifact), "--platform", "web", "--output", str(tmp_path / name), "--json")
    assert result.code == 0, result.stderr
    return tmp_path / name, json.loads(result.stdout)


@pytest.mark.parametrize("target, runtime, package", [("tflite", "mediapipe", "@mediapipe/tasks-vision"),
                                                       ("onnx", "onnxruntime-web", "onnxruntime-web")])
def test_a_web_bundle_pins_its_runtime_and_describes_the_input(artifacts, tmp_path, target, runtime, package):
    folder, written = _bundle(artifacts[target], tmp_path)
    assert sorted(written["files"]) == sorted(["README.md", "app.mjs", "classify.mjs", "index.html", "model.json",
                                               "package.json", artifacts[target].name])
    config = json.loads((folder / "model.json").read_text())
    assert config["runtime"] == runtime and config["classes"] == 1000
    assert config["input"]["shape"] == ([1, 64, 64, 3] if target == "tflite" else [1, 3, 64, 64])
    assert config["input"]["image_input"] == (target == "tflite")
    dependencies = json.loads((folder / "package.json").read_text())["dependencies"]
    assert list(dependencies) == [package] and dependencies[package][0].isdigit()  # pinned, not a range
    assert 'id="edgevit-result"' in (folder / "index.html").read_text()


def test_a_web_bundle_refuses_what_the_browser_cannot_run(artifacts, native_exports, tmp_path):
    assert_clean_failure(run_cli("bundle", str(artifacts["coreml"]), "--platform", "web", "--output",
                                 str(tmp_path / "a")), contains="TFLite or ONNX")
    native = next(iter(native_exports.values()))[2].path
    assert_clean_failure(run_cli("bundle", str(native), "--platform", "web", "--output", str(tmp_path / "b")),
                         contains="--native-ops")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("target", ["tflite", "onnx"])
def test_the_page_classifies_like_edgevit_predict_in_headless_chromium(artifacts, photo, tmp_path, target):
    why = missing()
    if why:
        pytest.skip(f"browser test skipped: {why}")
    folder, _ = _bundle(artifacts[target], tmp_path)
    shutil.copy(photo, folder / "photo.jpg")
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=folder, check=True,
                   capture_output=True, timeout=600)
    with serving(folder) as url:
        answer, errors = page_result(url + "index.html?image=photo.jpg")
    assert "error" not in answer, answer["error"]
    predicted = run_cli("predict", str(artifacts[target]), str(photo), "--resize", "stretch", "--top-k", "1000",
                        "--json")
    assert predicted.code == 0, predicted.stderr
    expected = {row["class"]: row["score"] for row in json.loads(predicted.stdout)["top"]}
    order = sorted(expected, key=lambda c: -expected[c])
    assert answer["indices"][:5] == order[:5], (answer["indices"][:5], order[:5])
    page = dict(zip(answer["indices"], answer["scores"]))
    assert len(page) == 1000
    worst = max(abs(page[c] - expected[c]) for c in expected)
    assert worst <= 1e-4, worst
    assert not [e for e in errors if "XNNPACK" not in e], errors
