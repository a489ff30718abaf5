"""The README's CLI and Python examples run as written (the files they name are made first)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def code_block(section: str, language: str) -> str:
    """The first ``language`` block after the heading ``## section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no {language} block under '## {section}'"
    return match.group(1)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGEVIT_DEBUG"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's edgevit
    return env


def test_the_python_example_runs_as_a_plain_script(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code_block("Python", "python"))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1200, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "intact" in proc.stdout and "25 folds, 0 kept" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "edgenext_xx_small.mlpackage", "edgenext_xx_small.onnx", "edgenext_xx_small.tflite"]


def test_the_cli_example_runs_as_written(tmp_path, photo):
    import torch

    import edgevit

    torch.save(edgevit.create_model("edgenext_xx_small").state_dict(), tmp_path / "edgenext_xx_small.pth")
    shutil.copy(photo, tmp_path / "photo.jpg")
    script = tmp_path / "example.sh"
    script.write_text("set -euo pipefail\n" + code_block("CLI", "bash"))
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                          env=_env())
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert (tmp_path / "bench.png").is_file() and (tmp_path / "plan" / "plan.json").is_file()
