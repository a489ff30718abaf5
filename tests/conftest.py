"""Shared fixtures: a CLI runner in a real subprocess, and one set of exported artifacts."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SMALL = 64  # export size for tests (EdgeNeXt needs multiples of 32)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, block: tuple[str, ...] = (), tmp: Path | None = None,
            timeout: int = 600) -> CliResult:
    """Run ``python -m edgevit ARGS`` in a fresh process; ``block`` makes those modules unimportable."""
    env = dict(os.environ)
    env.pop("EDGEVIT_DEBUG", None)
    if block:
        shadow = Path(tmp or cwd) / "_blocked_modules"
        shadow.mkdir(parents=True, exist_ok=True)
        for name in block:
            (shadow / f"{name}.py").write_text(f"raise ImportError('{name} is blocked by the test')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(shadow), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "edgevit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_clean_failure(result: CliResult, code: int = 2, contains: str | None = None) -> None:
    """Exit ``code``, exactly one line on stderr, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == code, (result.code, result.stderr)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("edgevit: error:"), lines[0]
    if contains:
        assert contains in lines[0], lines[0]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """edgenext_xx_small exported to every target at 64x64 (seeded random weights)."""
    import edgevit

    out = tmp_path_factory.mktemp("artifacts")
    results = edgevit.export("edgenext_xx_small", "all", out, image_size=SMALL)
    return {r.target: r.path for r in results}


@pytest.fixture(scope="session")
def photo() -> Path:
    """A real photograph that ships inside scikit-learn."""
    import sklearn.datasets

    path = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    assert path.is_file()
    return path
