"""The Jetson demo and ONNX Runtime's execution providers, in a venv built from this
repository without torch: TensorRT, CUDA, then the CPU (here the CPU fallback, which must be
reported, not silent), in the demo, ``edgevit.load`` and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import run_cli
from .demos import JETSON_DEMO, assert_demo_failure, demo_output, predicted
from .venvs import venv_run

# --- Jetson: ONNX Runtime execution providers -----------------------------------------------

def test_jetson_demo_falls_back_to_the_cpu_and_says_so(device_venv, artifacts, frames, tmp_path):
    cache = tmp_path / "trt"
    result = venv_run(device_venv, "python", JETSON_DEMO, artifacts["onnx"], "--source", frames, "--json",
                      "--trt-cache", cache)
    rows, summary = demo_output(result)
    assert len(rows) == 3 and summary["backend"].startswith("onnxruntime")
    assert "(CPUExecutionProvider; fell back: TensorrtExecutionProvider is not in this onnxruntime build" \
        in summary["backend"]
    note = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(note) == 1 and note[0].startswith("demo: note: running on CPUExecutionProvider"), result.stderr
    for row in rows:
        assert [c["class"] for c in row["top"]] == predicted(artifacts["onnx"], frames / row["frame"])[:3]
    assert not cache.exists()  # no TensorRT here: nothing written for it
    quiet = venv_run(device_venv, "python", JETSON_DEMO, artifacts["onnx"], "--source", frames, "--providers", "cpu")
    assert quiet.code == 0 and quiet.stderr.strip() == "" and "(CPUExecutionProvider)" in quiet.stdout
    assert_demo_failure(venv_run(device_venv, "python", JETSON_DEMO, artifacts["onnx"], "--source", frames,
                                 "--providers", "cdua"), "unknown execution provider 'cdua'")
    assert_demo_failure(venv_run(device_venv, "python", JETSON_DEMO, artifacts["tflite"], "--source", frames),
                        "runs .onnx artifacts")


def test_load_reports_the_providers_it_really_uses(artifacts):
    import edgevit
    from edgevit.errors import EdgeVitError

    rt = edgevit.load(artifacts["onnx"], providers=["tensorrt", "CUDAExecutionProvider", "cpu"])
    assert rt.requested == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert rt.providers == ["CPUExecutionProvider"]
    assert "fell back: TensorrtExecutionProvider is not in this onnxruntime build" in rt.describe()
    plain = edgevit.load(artifacts["onnx"])
    assert plain.fallback == "" and plain.describe().endswith("(CPUExecutionProvider)")
    with_options = edgevit.load(artifacts["onnx"], providers=[("cuda", {"device_id": 0}), "cpu"])
    assert with_options.providers == ["CPUExecutionProvider"] and "CUDAExecutionProvider" in with_options.fallback
    for bad, message in ((["cdua"], "unknown execution provider 'cdua'"),
                         ([("cuda", 0)], r"a name or \(name, \{option: value\}\), not \('cuda', 0\)"),
                         ([("cuda", {}, "x")], "a name or"), ([7], "not 7")):
        with pytest.raises(EdgeVitError, match=message):
            edgevit.load(artifacts["onnx"], providers=bad)
    with pytest.raises(EdgeVitError, match="execution providers apply to ONNX artifacts only"):
        edgevit.load(artifacts["tflite"], providers=["cpu"])


def test_a_provider_that_fails_during_a_run_is_reported_and_the_cpu_takes_over(artifacts):
    """ONNX Runtime's own fallback prints to stdout and says nothing afterwards: edgevit's
    reports which provider now runs, and why."""
    import edgevit

    rt = edgevit.load(artifacts["onnx"], providers=["cpu"])
    x = np.zeros((1, 3, 64, 64), np.float32)
    want = rt.run(x)

    class EPFail(Exception):  # the class onnxruntime raises when an execution provider fails
        pass

    class FlakyGpuSession:
        def __init__(self, session):
            self.session, self.gpu = session, True

        def run(self, *args):
            if self.gpu:
                raise EPFail("CUDA failure 700: an illegal memory access was encountered")
            return self.session.run(*args)

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.gpu else ["CPUExecutionProvider"]

        def set_providers(self, providers):
            assert providers == ["CPUExecutionProvider"]
            self.gpu = False

    rt.session, rt.requested = FlakyGpuSession(rt.session), ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert rt.fallback == ""
    np.testing.assert_array_equal(rt.run(x), want)
    assert rt.providers == ["CPUExecutionProvider"]
    assert rt.fallback == "CUDAExecutionProvider failed during a run (CUDA failure 700: an illegal memory access " \
                          "was encountered)"


def test_cli_providers_option(artifacts, photo, tmp_path):
    bench = run_cli("--json", "bench", str(artifacts["onnx"]), str(artifacts["tflite"]), "--providers", "cuda,cpu",
                    "--runs", "2", "--warmup", "1", cwd=tmp_path)
    assert bench.code == 0, bench.stderr
    onnx_row, tflite_row = json.loads(bench.stdout)["rows"]
    assert onnx_row["providers"] == ["CPUExecutionProvider"] and "fell back: CUDAExecutionProvider" in onnx_row["backend"]
    assert onnx_row["fallback"] == "CUDAExecutionProvider is not in this onnxruntime build"
    assert tflite_row["providers"] is None and tflite_row["fallback"] is None
    human = run_cli("bench", str(artifacts["onnx"]), "--providers", "cuda", "--runs", "2", "--warmup", "1", cwd=tmp_path)
    assert human.code == 0 and "fell back: CUDAExecutionProvider is not in this onnxruntime build" in human.stdout
    predict = run_cli("--json", "predict", str(artifacts["onnx"]), str(photo), "--providers", "tensorrt,cpu")
    assert predict.code == 0 and "fell back: TensorrtExecutionProvider" in json.loads(predict.stdout)["backend"]
    from .conftest import assert_clean_failure

    assert_clean_failure(run_cli("predict", str(artifacts["onnx"]), str(photo), "--providers", "gpu"),
                         contains="unknown execution provider 'gpu'")
    assert_clean_failure(run_cli("predict", str(artifacts["tflite"]), str(photo), "--providers", "cpu"),
                         contains="execution providers apply to ONNX artifacts only")
    assert_clean_failure(run_cli("predict", str(artifacts["onnx"]), str(photo), "--providers", ","),
                         contains="--providers needs at least one name")
    (tmp_path / "labels.txt").write_bytes(b"\xff\xfe not utf-8")  # the labels reader the demos share
    assert_clean_failure(run_cli("predict", str(artifacts["onnx"]), str(photo), "--labels", str(tmp_path / "labels.txt")),
                         contains="is not UTF-8 text")
