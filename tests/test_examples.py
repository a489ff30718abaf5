"""The runnable examples work as a user runs them (short settings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_prepbn_digits_accuracy_is_identical_before_and_after_folding(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "prepbn_digits.py"), "--epochs", "10", "--output", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["accuracy_recalibrated"] > 0.85, result  # it really learned the digits
    assert result["accuracy_folded"] == result["accuracy_recalibrated"] == result["accuracy_onnx"]
    assert result["predictions_identical"] and result["max_logit_change"] < 1e-4
    assert result["folds"] > 0 and result["norms_left_after_folding"] == []
    assert "(lambda) 0.000" in proc.stderr  # the schedule reached pure RepBN
    assert Path(result["onnx"]).is_file()


def test_the_example_devices_file_is_a_valid_placement_for_the_readme_split():
    """README's 'Split across devices' uses examples/devices.yaml: two devices, one per runtime."""
    from edgevit.edvit import read_devices

    devices = read_devices(EXAMPLES / "devices.yaml")
    assert [(d.name, d.target) for d in devices] == [("jetson-orin", "onnx"), ("pi-5", "tflite")]
