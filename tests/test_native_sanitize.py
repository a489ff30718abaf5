"""The sanitizer build: edgevit._native compiled with ASan + UBSan, stressed by tests/native_stress.py.

Builds the extension with ``-DEDGEVIT_SANITIZE=ON`` into a temporary directory (about 30-40 s on
two cores), then runs the stress script three times (the default ISA, then EDGEVIT_NATIVE_ISA=avx2 and
=baseline: the variable is read once per process; on a CPU without AVX-512 the avx2 run repeats
the default) against that build, with libasan preloaded into Python.

Skipped when cmake, g++, libasan or nanobind is missing, except under CI=true, where that fails.
Select it alone with ``pytest -m sanitizer``; CI runs it with the rest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRESS = ROOT / "tests" / "native_stress.py"
SANITIZER_ERRORS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer", "AddressSanitizer: CHECK failed")


def _missing(what: str) -> None:
    message = f"the sanitizer build needs {what}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def _gcc_file(name: str) -> str | None:
    """The absolute path g++ links `name` from, or None (g++ answers the bare name when it has none)."""
    proc = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True)
    path = proc.stdout.strip()
    return os.path.realpath(path) if proc.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def toolchain() -> dict[str, str]:
    """cmake, g++, the runtime libraries to preload, and nanobind's CMake directory."""
    cmake, gxx = shutil.which("cmake"), shutil.which("g++")
    if cmake is None:
        _missing("cmake")
    if gxx is None:
        _missing("a C++ compiler (g++)")
    libasan = _gcc_file("libasan.so")
    if libasan is None:
        _missing("libasan (g++ -print-file-name=libasan.so found none)")
    libstdcxx = _gcc_file("libstdc++.so.6")
    if libstdcxx is None:
        _missing("libstdc++.so.6 (g++ -print-file-name=libstdc++.so.6 found none)")
    proc = subprocess.run([sys.executable, "-m", "nanobind", "--cmake_dir"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        _missing(f"nanobind in {sys.executable} ({_tail(proc.stderr, 3).strip()})")
    return dict(cmake=cmake, gxx=gxx, libasan=libasan, libstdcxx=libstdcxx, nanobind=proc.stdout.strip())


@pytest.fixture(scope="module")
def sanitized_build(toolchain, tmp_path_factory) -> Path:
    """The ASan/UBSan _native*.so, built from this checkout into a temporary directory."""
    build = tmp_path_factory.mktemp("native_asan")
    configure = [toolchain["cmake"], "-S", str(ROOT), "-B", str(build),
                 "-DEDGEVIT_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                 f"-DCMAKE_CXX_COMPILER={toolchain['gxx']}",  # the compiler whose libasan is preloaded
                 f"-Dnanobind_DIR={toolchain['nanobind']}", f"-DPython_EXECUTABLE={sys.executable}"]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    for command in (configure, [toolchain["cmake"], "--build", str(build), "-j", str(os.cpu_count() or 2)]):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(command)} failed:\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}"
    modules = sorted(build.glob("_native*.so"))
    assert len(modules) == 1, f"expected one _native*.so in {build}: {sorted(p.name for p in build.iterdir())}"
    return build


def _asan_env(toolchain, build: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEVIT_NATIVE_ISA", "PYTHONPATH", "LD_PRELOAD")}
    # libstdc++ is preloaded with libasan: Python does not link it, so it would only arrive with
    # _native's dlopen, after libasan resolved its __cxa_throw interceptor, and the first C++
    # exception (every rejected argument) would die in "CHECK failed: asan_interceptors.cpp".
    env.update(LD_PRELOAD=f"{toolchain['libasan']} {toolchain['libstdcxx']}",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
               PYTHONPATH=str(build), **extra)
    return env


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=str(ROOT))


@pytest.mark.sanitizer
def test_sanitizer_build_asan_ubsan_stress(toolchain, sanitized_build):
    """ASan + UBSan build of the kernels: the stress script reports no sanitizer error under both ISAs."""
    module = next(sanitized_build.glob("_native*.so"))
    binary = module.read_bytes()
    assert b"__asan_report_load" in binary and b"__ubsan_handle" in binary, f"{module} is not instrumented"

    # Control: in this environment ASan does catch a read past the end of a numpy buffer.
    control = _run([sys.executable, "-c",
                    "import ctypes, numpy as np\n"
                    "a, b = np.zeros(13, np.float32), np.zeros(64, np.float32)\n"
                    "ctypes.memmove(b.ctypes.data, a.ctypes.data, a.nbytes + 4)\n"],
                   _asan_env(toolchain, sanitized_build))
    assert control.returncode != 0 and "heap-buffer-overflow" in control.stderr, _tail(control.stderr)

    for isa in ("default", "avx2", "baseline"):
        extra = {} if isa == "default" else {"EDGEVIT_NATIVE_ISA": isa}
        proc = _run([sys.executable, str(STRESS), "--require-sanitized", "--one-isa"],
                    _asan_env(toolchain, sanitized_build, **extra))
        report = f"stress ({isa} ISA) exit {proc.returncode}\nstdout:\n{_tail(proc.stdout)}\nstderr:\n{_tail(proc.stderr, 120)}"
        assert proc.returncode == 0, report
        for marker in SANITIZER_ERRORS:
            assert marker not in proc.stderr, report
        assert "sanitized=True" in proc.stdout and str(sanitized_build) in proc.stdout, report
        assert " 0 failures" in proc.stdout, report
        if isa == "baseline":
            assert "isa=baseline" in proc.stdout, report


@pytest.mark.sanitizer
def test_sanitizer_build_of_the_onnx_runtime_library_on_hostile_graphs(toolchain, sanitized_build):
    """libedgevit_ort.so with ASan + UBSan inside ONNX Runtime: every hostile single-node graph
    fails with a clear status, the ops match float64, and the sanitizers report nothing."""
    from .ort_custom_ops import EXPECTED

    library = sanitized_build / "libedgevit_ort.so"
    if not library.is_file():
        _missing("ONNX Runtime's headers for libedgevit_ort.so (python native/fetch_ort_headers.py)")
    pytest.importorskip("onnxruntime")
    assert b"__asan_report_load" in library.read_bytes(), f"{library} is not instrumented"
    proc = _run([sys.executable, str(ROOT / "tests" / "ort_custom_ops.py"), str(library)],
                _asan_env(toolchain, sanitized_build))
    report = f"exit {proc.returncode}\nstdout:\n{_tail(proc.stdout)}\nstderr:\n{_tail(proc.stderr, 120)}"
    assert proc.returncode == 0, report
    for marker in SANITIZER_ERRORS:
        assert marker not in proc.stderr, report
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, fragment in EXPECTED.items():
        assert fragment in result["hostile"][name], (name, result["hostile"][name])
    assert max(result["parity"].values()) <= 1e-5, result["parity"]
