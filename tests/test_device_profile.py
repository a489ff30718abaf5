"""The device profile as users install it: a fresh venv with ``pip install
"edgevit-*.whl[onnx,tflite]"`` (the wheel built from this repository), no torch. Every device command works there, and the ones that need the
workstation say which extra to install."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from .conftest import SMALL, CliResult, assert_clean_failure, run_cli
from .venvs import venv_run

ROOT = Path(__file__).resolve().parent.parent


def device_cli(venv: Path, *args: str, cwd: Path | None = None) -> CliResult:
    return venv_run(venv, "edgevit", *args, cwd=cwd)


def test_the_device_venv_has_no_torch_and_consistent_dependencies(device_venv):
    python = str(device_venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_help_version_and_models(device_venv):
    for args in (["--help"], ["-h"], ["export", "--help"]):
        result = device_cli(device_venv, *args)
        assert result.code == 0 and "Usage" in result.stdout, (args, result.stderr)
    assert device_cli(device_venv, "--version").stdout.startswith("edgevit ")
    assert json.loads(device_cli(device_venv, "--json", "models").stdout)[0]["name"]


def test_info_predict_and_bench_on_onnx_and_tflite(device_venv, artifacts, photo, tmp_path):
    for target in ("onnx", "tflite"):
        info = device_cli(device_venv, "--json", "info", str(artifacts[target]))
        assert info.code == 0, info.stderr
        assert json.loads(info.stdout)["integrity"]["status"] == "intact"
        here = device_cli(device_venv, "--json", "predict", str(artifacts[target]), str(photo))
        assert here.code == 0, here.stderr
        workstation = run_cli("--json", "predict", str(artifacts[target]), str(photo))
        got, want = json.loads(here.stdout)["top"], json.loads(workstation.stdout)["top"]
        assert [r["class"] for r in got] == [r["class"] for r in want]
        assert np.allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-5)
    bench = device_cli(device_venv, "--json", "bench", str(artifacts["onnx"]), str(artifacts["tflite"]),
                       "--runs", "2", "--warmup", "1", cwd=tmp_path)
    assert bench.code == 0, bench.stderr
    assert [r["median_ms"] > 0 for r in json.loads(bench.stdout)["rows"]] == [True, True]


def test_int8_artifacts_run_and_describe_themselves_without_torch(device_venv, int8_artifacts, photo):
    """ONNX QDQ / dynamic and TFLite int8 load, predict as on the workstation, and info shows
    the accuracy guard's report from the metadata alone."""
    for key in (("onnx", "full"), ("onnx", "dynamic"), ("tflite", "full"), ("tflite", "dynamic")):
        path = str(int8_artifacts[key].path)
        info = device_cli(device_venv, "info", path)
        assert info.code == 0 and f"int8 ({key[1]}): guard passed" in info.stdout, (key, info.stderr)
        here = device_cli(device_venv, "--json", "predict", path, str(photo))
        assert here.code == 0, (key, here.stderr)
        got, want = json.loads(here.stdout)["top"], json.loads(run_cli("--json", "predict", path, str(photo)).stdout)["top"]
        assert [r["class"] for r in got] == [r["class"] for r in want]
        assert np.allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-5)


def test_workstation_commands_name_the_extra_to_install(device_venv, artifacts, tmp_path):
    result = device_cli(device_venv, "export", "--model", "edgenext_xx_small", "--image-size", str(SMALL),
                        "--output", str(tmp_path / "out"))
    assert_clean_failure(result, contains='pip install ".[export]"')
    assert not (tmp_path / "out").exists()
    assert_clean_failure(device_cli(device_venv, "info", str(artifacts["coreml"])), contains='".[coreml]"')
    assert_clean_failure(device_cli(device_venv, "verify", str(artifacts["onnx"]), "--model", "edgenext_xx_small"),
                         contains='".[export]"')


def test_usage_errors_in_the_device_venv(device_venv):
    for args in (["exprot"], ["verify", "x.onnx"], ["models", "--quiet", "--bogus"]):
        assert_clean_failure(device_cli(device_venv, *args))


def test_a_split_plan_runs_on_the_local_backend(device_venv, plan, trained, tmp_path):
    _, data = trained
    batch = tmp_path / "batch.npy"
    np.save(batch, data.x_test[:4])
    result = device_cli(device_venv, "--json", "run", "--plan", str(plan.directory), str(batch))
    assert result.code == 0, result.stderr
    assert len(json.loads(result.stdout)["predictions"]) == 4


def test_native_ops_files_run_through_the_packaged_library(device_venv, native_exports, tmp_path):
    """The wheel carries libedgevit_ort.so: --native-ops files run without torch or
    onnxruntime-extensions, as the workstation's standard export computes them."""
    info = device_cli(device_venv, "--json", "info", "--native")
    assert info.code == 0, info.stderr
    assert json.loads(info.stdout)["onnx_runtime"].startswith("libedgevit_ort.so custom ops"), info.stdout
    code = ("import sys, numpy as np, edgevit\n"
            "x = np.load(sys.argv[2])\n"
            "np.save(sys.argv[3], edgevit.load(sys.argv[1]).run(x))\n")
    for family, (model, standard, native) in native_exports.items():
        x = np.random.default_rng(1).standard_normal((1, *model.input_size)).astype(np.float32)
        np.save(tmp_path / "x.npy", x)
        result = venv_run(device_venv, "python", "-c", code, str(native.path), str(tmp_path / "x.npy"),
                          str(tmp_path / "y.npy"))
        assert result.code == 0, (family, result.stderr[-2000:])
        import edgevit

        want = edgevit.load(standard.path).run(x)
        assert np.abs(np.load(tmp_path / "y.npy") - want).max() <= 1e-5, family


def test_check_runs_without_torch_and_names_the_extra_for_core_ml(device_venv, artifacts):
    """The pre-flight report on the device profile: the vendors' analyzers come with the
    runtimes' extras; a Core ML package needs coremltools, named in one line."""
    for target, accelerators in (("onnx", ["NNAPI", "Core ML MLProgram", "Core ML NeuralNetwork"]),
                                 ("tflite", ["TFLite GPU delegate"])):
        here = device_cli(device_venv, "--json", "check", str(artifacts[target]))
        assert here.code == 0, here.stderr
        workstation = json.loads(run_cli("--json", "check", str(artifacts[target])).stdout)
        assert json.loads(here.stdout)["accelerators"] == workstation["accelerators"]
        assert [a["accelerator"] for a in workstation["accelerators"]] == accelerators
    assert_clean_failure(device_cli(device_venv, "check", str(artifacts["coreml"])), contains='".[coreml]"')
