"""The Raspberry Pi / Jetson demos on arm64 under emulation (examples/raspberry_pi/emulate.sh):
about 8 minutes on 2 cores (11 the first time), root only, so it runs on request, never by default:

    sudo .venv/bin/python -m pytest -m emulation tests/test_emulation.py

The script builds (or reuses) a Debian bookworm arm64 root, runs the demos there on
artifacts exported here, and compares; this test holds it to its verdict and numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "raspberry_pi" / "emulate.sh"

pytestmark = pytest.mark.emulation


@pytest.fixture(autouse=True)
def only_on_request(request):
    if "emulation" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("arm64 emulation runs on request: pytest -m emulation (as root)")
    if os.geteuid() != 0:
        pytest.skip("emulate.sh needs root (debootstrap, binfmt_misc, chroot)")


def test_arm64_scores_match_x86_and_the_kernels_pass(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=5400,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    demos = {(r["runtime"], r["artifact"]): r for r in results["demo"]}
    assert set(demos) == {("ai-edge-litert", f"{p}.tflite") for p in ("fp32", "fp16", "int8")} \
        | {("tflite-runtime", f"{p}.tflite") for p in ("fp32", "fp16", "int8")} \
        | {("onnxruntime", f"{p}.onnx") for p in ("fp32", "int8")}
    for (runtime, artifact), row in demos.items():
        assert row["top1_equal"] and row["frames"] == 32, row
        if artifact.startswith("fp32"):
            assert row["max_abs_err"] <= 1e-4, row
    assert "running on CPUExecutionProvider" in demos[("onnxruntime", "fp32.onnx")]["demo_note"]
    kernels = results["kernels"]
    assert kernels["passed"] and kernels["isa"] == "baseline" and kernels["max_err"] <= 1e-5
    native = results["native_ort"]  # libedgevit_ort.so built for aarch64, run with onnxruntime + numpy only
    assert native["passed"] and native["modules_loaded"] == [], native
    assert max(native["model_vs_x86_standard"], native["ops_vs_reference"], native["ops_vs_x86"]) <= 1e-5
    assert results["passed"]
