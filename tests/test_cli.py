"""The CLI as a user runs it: the README's commands, JSON output, exit codes."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

import edgevit

from .conftest import SMALL, assert_clean_failure, run_cli


def test_help_is_fast():
    run_cli("--help")
    best = min(_timed(lambda: run_cli("--help")) for _ in range(3))
    assert best < 0.5, f"edgevit --help took {best:.2f} s"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_models_json():
    result = run_cli("--json", "models")
    assert result.code == 0
    names = [row["name"] for row in json.loads(result.stdout)]
    assert names == edgevit.list_models()


def test_export_default_output_dir_and_json(tmp_path):
    result = run_cli("--json", "export", "--model", "edgenext_xx_small", "--target", "onnx",
                     "--image-size", str(SMALL), cwd=tmp_path)
    assert result.code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["written"] and row["parity"]["passed"]
    assert (tmp_path / "edgevit_out" / "edgenext_xx_small.onnx").is_file()


def test_verify_predict_info_bench(artifacts, photo, tmp_path):
    onnx_path, tflite_path = str(artifacts["onnx"]), str(artifacts["tflite"])
    ok = run_cli("verify", onnx_path, "--model", "edgenext_xx_small", "--image", str(photo))
    assert ok.code == 0 and "pass" in ok.stdout, ok.stderr
    pred = run_cli("--json", "predict", tflite_path, str(photo), "--top-k", "3")
    assert pred.code == 0, pred.stderr
    top = json.loads(pred.stdout)["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"]
    info = run_cli("--json", "info", str(artifacts["coreml"]))
    assert info.code == 0
    described = json.loads(info.stdout)
    assert described["metadata"]["model"] == "edgenext_xx_small" and described["op_census"]["conv"] > 0
    chart = tmp_path / "bench.png"
    bench = run_cli("--json", "bench", onnx_path, tflite_path, "--runs", "5", "--threads", "1",
                    "--plot", str(chart))
    assert bench.code == 0, bench.stderr
    rows = json.loads(bench.stdout)["rows"]
    assert [r["artifact"] for r in rows] == [onnx_path, tflite_path]
    assert all(r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] and r["peak_rss_mb"] > 0 for r in rows)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_top_k_and_its_old_spelling(artifacts, photo):
    """--top-k is the one name; --top (edgevit run's old spelling) is accepted, not shown."""
    tflite_path = str(artifacts["tflite"])
    alias = run_cli("--json", "predict", tflite_path, str(photo), "--top", "2")
    assert alias.code == 0 and len(json.loads(alias.stdout)["top"]) == 2, alias.stderr
    usage = run_cli("predict", "--help")
    assert "--top-k" in usage.stdout and "--top " not in usage.stdout
    assert_clean_failure(run_cli("predict", tflite_path, str(photo), "--top", "2", "--top-k", "3"),
                         contains="give --top-k once")
    assert_clean_failure(run_cli("predict", tflite_path, str(photo), "--top-k", "0"), contains="--top-k must be at least 1")


def test_verify_fails_with_exit_1_and_a_table_when_weights_differ(artifacts, tmp_path):
    other = edgevit.create_model("edgenext_xx_small")
    torch.manual_seed(123)
    for p in other.parameters():
        p.data.normal_(0, 0.05)
    weights = tmp_path / "other.pth"
    torch.save(other.state_dict(), weights)
    result = run_cli("verify", str(artifacts["onnx"]), "--model", "edgenext_xx_small", "--weights", str(weights))
    assert result.code == 1
    assert "FAIL" in result.stdout and "max abs err" in result.stdout


def test_export_parity_failure_writes_nothing(tmp_path, monkeypatch):
    import edgevit.pipeline.parity as parity_module

    monkeypatch.setitem(parity_module.TOLERANCES, "fp32", (0.0, 0.0))
    monkeypatch.setattr(parity_module, "compare", _always_off(parity_module.compare))
    try:
        edgevit.export("edgenext_xx_small", "onnx", tmp_path, image_size=SMALL)
    except edgevit.ParityError as exc:
        assert "nothing written" in str(exc)
    else:
        raise AssertionError("expected a ParityError")
    assert list(tmp_path.iterdir()) == []


def _always_off(compare):
    def shifted(name, ref, got, atol, rtol, kind="random"):
        return compare(name, ref, np.asarray(got) + 1.0, atol, rtol, kind)
    return shifted


def test_unknown_model(tmp_path):
    assert_clean_failure(run_cli("export", "--model", "edgenext_tiny", "--output", str(tmp_path)),
                         contains="unknown model 'edgenext_tiny'")
    assert list(tmp_path.iterdir()) == []


def test_unknown_target(tmp_path):
    assert_clean_failure(run_cli("export", "--model", "edgenext_xx_small", "--target", "tensorrt",
                                 "--output", str(tmp_path)), contains="unknown target")


def test_unwritable_output_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = run_cli("export", "--model", "edgenext_xx_small", "--output", str(blocker / "sub"))
    assert_clean_failure(result, contains="cannot write to output directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_bad_image_size(tmp_path):
    assert_clean_failure(run_cli("export", "--model", "edgenext_xx_small", "--image-size", "100",
                                 "--output", str(tmp_path)), contains="multiples of 32")
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_file(tmp_path):
    assert_clean_failure(run_cli("export", "--model", "edgenext_xx_small", "--weights", str(tmp_path / "no.pth"),
                                 "--output", str(tmp_path / "out")), contains="weights file not found")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_truncated_and_corrupt_artifacts(artifacts, tmp_path):
    for target in ("onnx", "tflite"):
        src = artifacts[target]
        cut = tmp_path / f"cut{src.suffix}"
        cut.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
        junk = tmp_path / f"junk{src.suffix}"
        junk.write_bytes(np.random.default_rng(0).bytes(4096))
        for bad in (cut, junk):
            for command in (["info", str(bad)], ["bench", str(bad), "--runs", "1"]):
                assert_clean_failure(run_cli(*command), contains=str(bad))
    package = tmp_path / "cut.mlpackage"
    shutil.copytree(artifacts["coreml"], package)
    weights = next(package.rglob("weight.bin"))
    weights.write_bytes(weights.read_bytes()[:1000])
    assert_clean_failure(run_cli("info", str(package)), contains="truncated or corrupt")
    model_file = next(package.rglob("model.mlmodel"))
    model_file.write_bytes(model_file.read_bytes()[:200])
    assert_clean_failure(run_cli("info", str(package)), contains="cannot load Core ML package")
    assert_clean_failure(run_cli("info", str(tmp_path / "missing.onnx")), contains="not found")
    assert_clean_failure(run_cli("info", str(tmp_path / "model.xyz")), contains="unknown artifact type")


def test_wrong_input_shape_dtype_and_nan(artifacts, tmp_path):
    for target in ("onnx", "tflite"):  # NCHW and NHWC (the TFLite default)
        shape = edgevit.load(artifacts[target]).inputs[0].shape
        cases = {
            "shape.npy": (np.zeros((1, 3, 32, 32), np.float32), "input shape 1x3x32x32 does not match"),
            "dtype.npy": (np.zeros(shape, np.int64), "input dtype int64 does not match"),
            "nan.npy": (np.full(shape, np.nan, np.float32), "NaN"),
        }
        for name, (array, message) in cases.items():
            np.save(tmp_path / name, array)
            assert_clean_failure(run_cli("predict", str(artifacts[target]), str(tmp_path / name)), contains=message)
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((1, 3, SMALL, SMALL), np.float32))
    assert run_cli("predict", str(artifacts["onnx"]), str(good)).code == 0
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    assert_clean_failure(run_cli("predict", str(artifacts["onnx"]), str(not_image)), contains="cannot read image")


def test_missing_optional_dependency(artifacts, tmp_path):
    result = run_cli("info", str(artifacts["onnx"]), block=("onnxruntime",), tmp=tmp_path)
    assert_clean_failure(result, contains='pip install ".[onnx]"')
    result = run_cli("info", str(artifacts["tflite"]), block=("ai_edge_litert", "tflite_runtime", "tensorflow"),
                     tmp=tmp_path)
    assert_clean_failure(result, contains='pip install ".[tflite]"')
    result = run_cli("export", "--model", "edgenext_xx_small", "--target", "coreml", "--image-size", str(SMALL),
                     "--output", str(tmp_path / "out"), block=("coremltools",), tmp=tmp_path)
    assert_clean_failure(result, contains='pip install ".[coreml]"')
    assert not (tmp_path / "out").exists()  # checked before any work or output


def test_device_profile_never_imports_torch(artifacts, photo, tmp_path):
    for command in (["--help"], ["models"], ["info", str(artifacts["onnx"])], ["info", str(artifacts["tflite"])],
                    ["predict", str(artifacts["tflite"]), str(photo)], ["predict", str(artifacts["onnx"]), str(photo)],
                    ["bench", str(artifacts["onnx"]), str(artifacts["tflite"]), "--runs", "2"]):
        result = run_cli(*command, block=("torch",), tmp=tmp_path)
        assert result.code == 0, (command, result.stderr)


def test_reparam_prints_the_report_and_saves_a_folded_model(tmp_path):
    out = tmp_path / "folded.pt"
    result = run_cli("reparam", "--model", "edgenext_xx_small_bn_hs", "--output", str(out))
    assert result.code == 0, result.stderr
    assert "32 folds, 3 kept" in result.stdout and "BatchNorm2d -> previous Conv2d" in result.stdout
    assert "stages.1.1.norm_xca" in result.stdout and "residual stream" in result.stdout
    folded = torch.load(out, weights_only=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 3, SMALL, SMALL)
    with torch.no_grad():
        ref = edgevit.create_model("edgenext_xx_small_bn_hs")(x)
        torch.testing.assert_close(folded(x), ref, atol=1e-5, rtol=1e-5)

    result = run_cli("--json", "reparam", "--model", "slab_deit_tiny", "--output", str(tmp_path / "s.pt"))
    data = json.loads(result.stdout)
    assert data["kept"] == 0 and data["fold_counts"] == {"PRepBN -> next Linear": 25}
    assert data["max_abs_change"] < 1e-5


def test_reparam_bad_inputs_fail_cleanly(tmp_path):
    assert_clean_failure(run_cli("reparam", "--model", "slab_deit_tiyn", "--output", str(tmp_path / "x.pt")),
                         contains="did you mean slab_deit_tiny")
    assert_clean_failure(run_cli("reparam", "--model", "slab_deit_tiny", "--output", str(tmp_path)),
                         contains="is a directory")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    assert_clean_failure(run_cli("reparam", "--model", "slab_deit_tiny", "--weights", str(tmp_path / "bad.pth"),
                                 "--output", str(tmp_path / "x.pt")), contains="cannot read weights file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]


def test_export_no_reparam_flag(tmp_path):
    result = run_cli("--json", "export", "--model", "edgenext_xx_small_bn_hs", "--no-reparam",
                     "--image-size", str(SMALL), "--output", str(tmp_path))
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)[0]["reparam"] is None
    result = run_cli("export", "--model", "edgenext_xx_small_bn_hs", "--image-size", str(SMALL),
                     "--output", str(tmp_path))
    assert "re-parameterized: 32 folds, 3 kept" in result.stdout


@pytest.mark.parametrize("args,contains", [
    (["verify", "out/m.onnx"], "Missing option '--model'"),
    (["exprot"], "No such command 'exprot'"),
    (["models", "--bogus"], "No such option: --bogus"),
    (["export", "--model"], "requires an argument"),
    (["bench", "a.onnx", "--runs", "many"], "Invalid value for '--runs'"),
])
def test_usage_errors_are_one_line_and_exit_2(args, contains):
    result = run_cli(*args)
    assert_clean_failure(result, contains=contains)
    assert "--help" in result.stderr  # where to read the usage


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["export", "-h"], ["predict", "--help"]])
def test_help_short_and_long(args):
    result = run_cli(*args)
    assert result.code == 0 and "Usage" in result.stdout and result.stderr == ""


@pytest.mark.parametrize("args", [["--version"], ["models", "--version"], ["--json", "--version"]])
def test_version_anywhere(args):
    result = run_cli(*args)
    assert result.code == 0 and result.stdout.strip() == f"edgevit {edgevit.__version__}", result


def test_global_options_after_the_command(tmp_path):
    result = run_cli("models", "--json", "--quiet")
    assert result.code == 0 and json.loads(result.stdout)[0]["name"] == edgevit.list_models()[0]
    result = run_cli("export", "--model", "edgenext_xx_small", "--target", "onnx", "--image-size", str(SMALL),
                     "--num-inputs", "1", "--output", str(tmp_path), "--quiet", "--json")
    assert result.code == 0 and json.loads(result.stdout)[0]["written"], result.stderr
    assert result.stderr == ""


def test_bare_command_prints_help():
    result = run_cli()
    assert result.code == 0 and "Usage" in result.stdout


def test_export_without_torch_names_the_export_extra(tmp_path):
    result = run_cli("export", "--model", "edgenext_xx_small", "--output", str(tmp_path / "out"),
                     block=("torch",), tmp=tmp_path)
    assert_clean_failure(result, contains='pip install ".[export]"')
    assert "torch==2.13.0" in result.stderr and not (tmp_path / "out").exists()


def test_input_form_and_label_errors(tmp_path):
    base = ("export", "--model", "edgenext_xx_small", "--image-size", str(SMALL), "--output", str(tmp_path))
    cases = [
        (("--target", "tflite", "--layout", "nwhc"), "unknown layout 'nwhc': choose nchw or nhwc"),
        (("--target", "coreml", "--layout", "nhwc", "--image-input"), "a Core ML image input is laid out by Core ML"),
        (("--target", "onnx", "--labels", str(tmp_path / "three.txt")), "3 labels given, but edgenext_xx_small has 1000"),
    ]
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    for extra, message in cases:
        assert_clean_failure(run_cli(*base, *extra), contains=message)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.tflite"))
