"""Build edgevit._native with CMake when a C++ toolchain is there; install without it otherwise."""

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

    def _cmake(self, ext: Extension) -> None:
        if shutil.which("cmake") is None:
            raise RuntimeError("cmake not found")
        import nanobind

        target = Path(self.get_ext_fullpath(ext.name)).resolve()
        build = Path(self.build_temp).resolve() / "cmake"
        build.mkdir(parents=True, exist_ok=True)
        # a compiler without make (e.g. only g++ installed): Ninja, from the build requirements
        generator = ["-G", "Ninja"] if shutil.which("make") is None and shutil.which("ninja") else []
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *generator,
                        f"-DPython_EXECUTABLE={sys.executable}", f"-Dnanobind_DIR={nanobind.cmake_dir()}"],
                       check=True)
        subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)], check=True)
        built = next(build.glob("_native*.so"), None) or next(build.glob("_native*.pyd"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, target)


setup(ext_modules=[CMakeExtension("edgevit._native")], cmdclass={"build_ext": CMakeBuild})
