"""The public API: every name is one thing, whatever has been imported before."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import types

import edgevit


def _import_every_submodule() -> None:
    for info in pkgutil.walk_packages(edgevit.__path__, "edgevit."):
        if info.name in ("edgevit.__main__", "edgevit._native"):
            continue  # runs the CLI; a compiled module
        importlib.import_module(info.name)


def test_no_public_function_shares_its_name_with_a_submodule():
    _import_every_submodule()
    functions = [name for name in edgevit.__all__ if name[0].islower() and name != "__version__"]
    assert "use_native" in functions
    for name in functions:
        value = getattr(edgevit, name)
        assert callable(value) and not isinstance(value, types.ModuleType), f"edgevit.{name} is {value!r}"


def test_verify_is_a_function_after_an_export(tmp_path):
    """The README's order: export first, then edgevit.verify (the submodule used to shadow it)."""
    script = (
        "import edgevit, edgevit.pipeline.verify\n"
        "r = edgevit.export('edgenext_xx_small', 'onnx', {out!r}, image_size=64, num_inputs=1)\n"
        "print(edgevit.verify(r.path, 'edgenext_xx_small', num_inputs=1).passed)\n"
    ).format(out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-2000:]
