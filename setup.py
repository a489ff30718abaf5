"""Build edgevit._native (and libedgevit_ort.so, when ONNX Runtime's headers are there) with
CMake when a C++ toolchain is there; install without them otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

ROOT = Path(__file__).resolve().parent
# in a folder of its own: a .so among the package's modules would look like an extension module
# to Python (pkgutil.walk_packages, `import edgevit.libedgevit_ort`), which it is not
ORT_LIBRARY = "lib/libedgevit_ort.so"


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[], optional=True)


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        try:
            self._cmake(ext)
        except (OSError, RuntimeError, subprocess.CalledProcessError, StopIteration) as exc:
            # an optional extension: setuptools warns and the package installs without it
            raise CompileError(f"edgevit._native not built ({exc}); the reference kernels will be used") from exc

    def copy_extensions_to_source(self) -> None:
        """Editable installs: the library goes next to _native in the source tree too."""
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
            built, dest = Path(regular_file).parent / ORT_LIBRARY, Path(inplace_file).parent / ORT_LIBRARY
            if built.is_file():
                dest.parent.mkdir(exist_ok=True)
                self.copy_file(str(built), str(dest))
            else:
                dest.unlink(missing_ok=True)

    def _cmake(self, ext: Extension) -> None:
        if shutil.which("cmake") is None:
            raise RuntimeError("cmake not found")
        import nanobind

        target = Path(self.get_ext_fullpath(ext.name)).resolve()
        build = Path(self.build_temp).resolve() / "cmake"
        build.mkdir(parents=True, exist_ok=True)
        # a compiler without make (e.g. only g++ installed): Ninja, from the build requirements
        generator = ["-G", "Ninja"] if shutil.which("make") is None and shutil.which("ninja") else []
        headers = [f"-DONNXRUNTIME_INCLUDE_DIR={os.environ['ONNXRUNTIME_INCLUDE_DIR']}"] \
            if os.environ.get("ONNXRUNTIME_INCLUDE_DIR") else []
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *generator, *headers,
                        f"-DPython_EXECUTABLE={sys.executable}", f"-Dnanobind_DIR={nanobind.cmake_dir()}"],
                       check=True)
        subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)], check=True)
        built = next(build.glob("_native*.so"), None) or next(build.glob("_native*.pyd"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, target)
        library = build / Path(ORT_LIBRARY).name
        if library.is_file():  # under _native's package: edgevit.native.ort_library finds it there
            (target.parent / ORT_LIBRARY).parent.mkdir(exist_ok=True)
            shutil.copy2(library, target.parent / ORT_LIBRARY)
        else:
            (target.parent / ORT_LIBRARY).unlink(missing_ok=True)  # never a stale one
            print(f"edgevit: {Path(ORT_LIBRARY).name} not built: no ONNX Runtime headers (set ONNXRUNTIME_INCLUDE_DIR or "
                  "run python native/fetch_ort_headers.py); ai.edgevit nodes fall back to onnxruntime-extensions",
                  file=sys.stderr)


setup(ext_modules=[CMakeExtension("edgevit._native")], cmdclass={"build_ext": CMakeBuild})
