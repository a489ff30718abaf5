"""Verification that sees real activations: photos and the user's data next to the random
inputs, the error per kind of input, and the fp16 range check before an fp16 artifact is written."""

from __future__ import annotations

import json

import numpy as np
import torch

import edgevit
from edgevit.pipeline.checks import photo_files, verification_probes
from edgevit.pipeline.fp16_range import FP16_MAX, LIMIT, measure_range

from .conftest import SMALL, assert_clean_failure, run_cli


def test_the_package_ships_its_verification_photos():
    files = photo_files()
    assert [f.stem for f in files] == ["astronaut", "cat", "coffee", "rocket"]
    assert all(f.stat().st_size < 32_000 for f in files)
    probes, sources = verification_probes((1, 3, 32, 32), (0.5,) * 3, (0.25,) * 3, 0.875, num_inputs=2)
    assert [p.kind for p in probes] == ["random", "random", "photo", "photo", "photo", "photo"]
    assert set(sources) == {"random", "photo"}
    # natural images are not N(0, 1): their statistics differ from the random inputs'
    photo = np.concatenate([p.x for p in probes if p.kind == "photo"])
    assert abs(photo.mean()) > 0.05 and np.abs(np.diff(photo, axis=-1)).mean() < 0.5


def test_export_reports_the_error_per_kind_of_input(tmp_path):
    result = edgevit.export("edgenext_xx_small", "onnx", tmp_path, image_size=SMALL, num_inputs=1,
                            verify_data="digits", verify_samples=3)
    kinds = result.parity.by_kind()
    assert list(kinds) == ["random", "photo", "data"]
    assert [kinds[k]["inputs"] for k in kinds] == [1, 4, 3]
    assert kinds["data"]["source"].startswith("3 samples of digits") and all(k["passed"] for k in kinds.values())
    stored = edgevit.load(result.path).metadata.parity
    assert stored["by_kind"]["data"]["inputs"] == 3 and stored["by_kind"]["photo"]["max_abs_err"] < 1e-4


def test_verify_takes_verify_data(artifacts, tmp_path):
    result = run_cli("--json", "verify", str(artifacts["onnx"]), "-m", "edgenext_xx_small", "--verify-data", "digits",
                     "--verify-samples", "2", "--num-inputs", "1")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {k: v["inputs"] for k, v in report["by_kind"].items()} == {"random": 1, "photo": 4, "data": 2}
    human = run_cli("verify", str(artifacts["onnx"]), "-m", "edgenext_xx_small", "--num-inputs", "1")
    assert human.code == 0 and "photo: 4 photos" in human.stdout, human.stdout


def test_bad_verify_data_is_one_line(artifacts, tmp_path):
    missing = run_cli("verify", str(artifacts["onnx"]), "-m", "edgenext_xx_small", "--verify-data",
                      str(tmp_path / "nowhere"))
    assert_clean_failure(missing, 2, "--verify-data")
    zero = run_cli("export", "-m", "edgenext_xx_small", "--image-size", str(SMALL), "-o", str(tmp_path),
                   "--verify-samples", "0")
    assert_clean_failure(zero, 2, "--verify-samples")
    assert not list(tmp_path.iterdir())


def _hidden_overflow(model: torch.nn.Module, scale: float = 3e5) -> torch.nn.Module:
    """The same function, but the stem convolution's output ``scale`` times larger: the
    LayerNorm after it divides the scale out (its eps aside), so the logits barely move,
    while the stem's output leaves fp16's range on any image."""
    with torch.no_grad():
        stem_conv, stem_norm = model.downsample_layers[0]
        stem_conv.weight.mul_(scale)
        stem_conv.bias.mul_(scale)
        stem_norm.eps *= scale * scale
    return model


def test_measure_range_finds_the_tensor_that_leaves_fp16():
    torch.manual_seed(0)
    model = _hidden_overflow(edgevit.create_model("edgenext_xx_small").eval())
    x = np.random.default_rng(0).standard_normal((1, 3, SMALL, SMALL)).astype(np.float32)
    program = torch.export.export(model, (torch.from_numpy(x),))
    report = measure_range(program, [x])
    assert not report.passed and report.max_abs > LIMIT and report.headroom > 1
    worst = report.peaks[0]
    assert worst.module == "downsample_layers.0.0" and worst.op.startswith("aten.conv2d"), worst
    assert "downsample_layers.0.0" in report.reason() and f"{worst.max_abs:.4g}" in report.reason()


def test_an_fp16_export_that_would_overflow_is_refused_and_nothing_is_written(tmp_path):
    """TFLite fp16 computes in fp32 on this CPU, so parity alone passes it (the old
    behaviour: written); on a phone GPU the stem would overflow. Refused, exit 1."""
    torch.manual_seed(0)
    model = _hidden_overflow(edgevit.create_model("edgenext_xx_small").eval())
    weights = tmp_path / "overflowing.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "out"
    result = run_cli("--json", "export", "-m", "edgenext_xx_small", "-w", str(weights), "--image-size", str(SMALL),
                     "--target", "tflite", "--precision", "fp16", "-o", str(out), "--num-inputs", "1")
    assert result.code == 1, result.stderr
    (row,) = json.loads(result.stdout)
    assert not row["written"] and row["fp16_range"]["status"] == "failed"
    assert row["fp16_range"]["worst"]["module"] == "downsample_layers.0.0"
    assert row["fp16_range"]["max_abs"] > FP16_MAX
    assert not out.exists() or not list(out.iterdir())
    fine = edgevit.export("edgenext_xx_small", "tflite", out, image_size=SMALL, precision="fp16", num_inputs=1)
    assert fine.written and fine.fp16_range.passed and 0 < fine.fp16_range.headroom < 1 / 4
    assert edgevit.load(fine.path).metadata.fp16_range["status"] == "passed"
