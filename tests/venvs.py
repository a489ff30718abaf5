"""Virtual environments built from this repository as users install it (a wheel built once,
then ``pip install "edgevit-*.whl[extra]"``), and programs run inside them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import CliResult

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(dest: Path) -> Path:
    """``pip wheel --no-deps -w dest`` of this checkout (native kernels compiled here)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(ROOT)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = dest.glob("edgevit-*.whl")
    return wheel


def make_venv(path: Path, *requirements: str) -> Path:
    """A fresh venv at ``path`` with only ``requirements`` (and what they depend on)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    pip = subprocess.run([str(path / "bin" / "pip"), "install", "-q", *requirements],
                         capture_output=True, text=True, timeout=1200)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return path


def venv_env(venv: Path) -> dict[str, str]:
    """The environment of a shell with ``venv`` activated (nothing of the test venv leaks in)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEVIT_DEBUG", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def venv_run(venv: Path, program: str, *args: str, cwd: Path | None = None, timeout: int = 600) -> CliResult:
    """Run ``program`` (a script of the venv, e.g. ``edgevit``, or ``python``) with ``args``."""
    proc = subprocess.run([str(venv / "bin" / program), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=venv_env(venv), cwd=cwd)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
