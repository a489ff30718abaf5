"""``edgevit check`` (the vendors' analyzers per accelerator) and the ``mobile`` ONNX form
(``--ep nnapi|coreml``) that keeps whole graphs on ONNX Runtime Mobile's NNAPI and Core ML
execution providers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgevit
from edgevit.reparam import mobile_ops

from .conftest import assert_clean_failure, run_cli


def _check(path) -> dict:
    result = run_cli("--json", "check", str(path))
    assert result.code == 0, result.stderr
    return {a["accelerator"]: a for a in json.loads(result.stdout)["accelerators"]}


def test_check_asks_each_vendor_analyzer(artifacts):
    onnx = _check(artifacts["onnx"])  # the default (CPU) form: ONNX Runtime's fused Gelu and LayerNormalization
    nnapi = onnx["NNAPI"]
    assert nnapi["analyzer"].startswith("onnxruntime ") and "mobile usability checker" in nnapi["analyzer"]
    assert nnapi["partitions"] > 2 and nnapi["suitable"] == "no" and "not recommended" in nnapi["verdict"]
    assert {"Gelu", "LayerNormalization", "ReduceL2"} <= set(nnapi["unsupported"])
    assert any(layer.startswith("stages.") and layer.endswith(".act") for layer in nnapi["unsupported"]["Gelu"])
    assert onnx["Core ML MLProgram"]["unsupported"].keys() == {"ReduceL2"}
    tflite = _check(artifacts["tflite"])["TFLite GPU delegate"]
    assert tflite["analyzer"].startswith("ai-edge-litert") and "compatible with GPU delegate" in tflite["verdict"]
    assert tflite["supported"] == tflite["nodes"] > 100 and tflite["partitions"] == 1
    ane = _check(artifacts["coreml"])["Apple Neural Engine"]
    assert ane["heuristic"] is True and ane["nodes"] > 50 and "heuristic" in ane["analyzer"]
    human = run_cli("check", str(artifacts["onnx"]))
    assert human.code == 0 and "NNAPI: " in human.stdout and "unsupported Gelu: stages." in human.stdout
    assert "--ep nnapi" in human.stdout  # the way out, for a file edgevit exported


def test_check_refuses_bad_input_in_one_line(tmp_path):
    assert_clean_failure(run_cli("check", str(tmp_path / "none.onnx")), contains="not found")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    assert_clean_failure(run_cli("check", str(broken)))
    assert_clean_failure(run_cli("check"))


def test_the_litert_parser_reads_gpu_warnings():
    from edgevit.inspect.litert_gpu import parse_analysis

    text = ("Subgraph#0 main(T#0) -> [T#2]\n  Op#0 CONV_2D(T#0, T#3) -> [T#1]\n"
            "  Op#1 CUMSUM(T#1, T#4) -> [T#2]\nGPU COMPATIBILITY WARNING: Not supported op CUMSUM\n\n"
            "  T#1(a.Net_model/a.Block_blocks/a.Conv_0;1) shape:[1], type:FLOAT32\n"
            "\nGPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1\n")
    ops, problems, tensors, verdict = parse_analysis(text)
    assert [name for name, _ in ops] == ["CONV_2D", "CUMSUM"] and problems == {1: "Not supported op CUMSUM"}
    assert tensors[1].startswith("a.Net_model") and "issues at nodes 1" in verdict


def test_mobile_ops_compute_what_they_replace_in_float64():
    x = torch.linspace(-12, 12, 240001, dtype=torch.float64)
    assert float((mobile_ops.gelu(x) - F.gelu(x)).abs().max()) < 2.5e-7
    y = torch.randn(4, 6, 10, dtype=torch.float64)
    w, b = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    assert torch.allclose(mobile_ops.layer_norm(y, (10,), w, b, 1e-6), F.layer_norm(y, (10,), w, b, 1e-6), atol=1e-12)
    assert torch.allclose(mobile_ops.l2_norm(y, -1, True), torch.linalg.vector_norm(y, dim=-1, keepdim=True))
    with mobile_ops.MobileOps():
        pooled = y.reshape(2, 2, 6, 10).abs().amax(dim=(-2, -1), keepdim=True)
        parts = y.split([3, 7], dim=-1)
        normalized = F.normalize(y, dim=1)
    assert torch.equal(pooled, y.reshape(2, 2, 6, 10).abs().amax(dim=(-2, -1), keepdim=True))
    assert [p.shape[-1] for p in parts] == [3, 7] and torch.equal(torch.cat(parts, -1), y)
    assert torch.allclose(normalized, F.normalize(y, dim=1), atol=1e-15)
    with mobile_ops.MobileOps():
        token, swish = y[:, 0], F.hardswish(y)
    assert torch.equal(token, y[:, 0]) and torch.allclose(swish, F.hardswish(y), atol=1e-15)
    grid = y.reshape(2, 2, 6, 10)
    with mobile_ops.MobileOps():
        largest = grid.amax(dim=(2, 3))
    assert torch.equal(largest, grid.amax(dim=(2, 3)))  # (B, C), as amax without keepdim
    assert math.isclose(float(mobile_ops.gelu(torch.tensor(0.0))), 0.0, abs_tol=1e-12)


@pytest.mark.parametrize("name, size", [("edgenext_xx_small", 64), ("edgenext_small", 64), ("slab_deit_tiny", 224),
                                        ("fmvit_s", 64),  # the four; then hard-swish and a class token
                                        ("edgenext_xx_small_bn_hs", 64), ("deit_tiny", 32)])
def test_the_mobile_form_is_one_partition_on_nnapi_and_core_ml(name, size, tmp_path):
    model = edgevit.create_model(name, img_size=32, patch_size=8) if name == "deit_tiny" else name  # 16 tokens
    result = edgevit.export(model, "onnx", tmp_path, image_size=size, ep="nnapi", num_inputs=1, verify_samples=1)
    assert result.written and result.parity.numerically_verified and result.form["form"] == "mobile"
    assert result.form["max_abs_change"] < 1e-5  # the form check, float64, against the model as trained
    for accelerator in ("NNAPI", "Core ML MLProgram"):
        report = _check(result.path)[accelerator]
        assert (report["partitions"], report["supported"], report["suitable"]) == (1, report["nodes"], "yes"), report
        assert "should work well" in report["verdict"]


def test_ep_is_an_onnx_option_that_names_its_mistakes(tmp_path):
    for args, message in ((["--target", "tflite", "--ep", "nnapi"], "--target onnx"),
                          (["--ep", "android"], "nnapi or coreml"),
                          (["--ep", "coreml", "--native-ops"], "--native-ops"),
                          (["--ep", "coreml", "--no-target-form"], "--no-target-form")):
        result = run_cli("export", "--model", "edgenext_xx_small", "--image-size", "64", "--output", str(tmp_path),
                         *args)
        assert_clean_failure(result, contains=message)
    assert not list(tmp_path.iterdir())


def test_export_prints_the_check_in_one_line(tmp_path):
    result = run_cli("export", "--model", "fmvit_t", "--image-size", "64", "--output", str(tmp_path), "--ep",
                     "coreml", "--num-inputs", "1")
    assert result.code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "accelerators:" in line)
    assert "NNAPI 1 partition (100%)" in line and "Core ML MLProgram 1 partition (100%)" in line
    census = edgevit.load(tmp_path / "fmvit_t.onnx").op_census()
    assert not {"Gelu", "Erf", "Abs", "Neg", "ReduceMax", "ReduceL2", "LayerNormalization"} & set(census)
    assert np.isfinite(list(census.values())).all()
