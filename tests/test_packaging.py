"""Every Python package in the source tree ships in the wheel (pyproject's package list)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for package, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            name = ".".join([package, *relative.parts])
            if any(name.startswith(p + ".") or name == p for p in config["package-dir"] if p != package
                   and p.startswith(package + ".")):
                continue  # mapped to its own folder
            assert name in listed, f"{name} ({init.parent}) is missing from [tool.setuptools] packages"


def _configure(tmp_path: Path, *options: str):
    import shutil
    import subprocess

    import pytest

    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    proc = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path), "-DEDGEVIT_PYTHON=OFF", *options],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    targets = subprocess.run(["cmake", "--build", str(tmp_path), "--target", "help"], capture_output=True, text=True)
    return proc.stdout, targets.stdout


def test_without_onnx_runtime_headers_the_build_skips_only_the_custom_op_library(tmp_path):
    """A wrong header folder is not fatal: the kernels still build, the library is skipped in one line."""
    output, targets = _configure(tmp_path, f"-DONNXRUNTIME_INCLUDE_DIR={tmp_path / 'no-headers'}")
    skipped = [line for line in output.splitlines() if "libedgevit_ort skipped" in line]
    assert len(skipped) == 1 and "fetch_ort_headers.py" in skipped[0]
    assert "edgevit_ort" not in targets and "kernels_baseline" in targets


def test_with_the_fetched_headers_the_build_has_the_custom_op_library(tmp_path):
    import pytest

    headers = ROOT / "build" / "ort-headers"
    if not (headers / "onnxruntime_c_api.h").is_file():
        pytest.skip("no headers in build/ort-headers (python native/fetch_ort_headers.py)")
    output, targets = _configure(tmp_path, f"-DONNXRUNTIME_INCLUDE_DIR={headers}")
    assert "libedgevit_ort with ONNX Runtime headers" in output and "edgevit_ort" in targets


def test_fetching_headers_from_a_wrong_package_fails_in_one_line_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    fake = tmp_path / "libonnxruntime-dev.deb"
    fake.write_bytes(b"!<arch>\nnot the package")
    proc = subprocess.run([sys.executable, str(ROOT / "native" / "fetch_ort_headers.py"), "--deb", str(fake),
                           "--output", str(tmp_path / "headers")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "is not the pinned" in proc.stderr
    assert not (tmp_path / "headers").exists()
