"""``libedgevit_ort.so``: the attention kernels as ONNX Runtime custom ops (``ai.edgevit``).

``pip install`` builds it beside ``edgevit._native`` (in ``edgevit/lib/``) when ONNX Runtime's C headers are
there (``native/fetch_ort_headers.py``); any ONNX Runtime process, with or without
edgevit, runs an ``--native-ops`` file once it registers the library:

    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(str(edgevit.native.ort_library.path()))

``EDGEVIT_ORT_LIBRARY`` names another build of it, or ``0`` to leave it unused (edgevit
then falls back to onnxruntime-extensions' Python custom ops); ``EDGEVIT_NATIVE=0`` turns
off every native path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import bindings

FILE_NAME = "libedgevit_ort.so"
# edgevit/lib/: a folder that is no package, so Python never takes the .so for a module
PACKAGED = Path(__file__).resolve().parent.parent / "lib" / FILE_NAME


@dataclass(frozen=True)
class LibraryStatus:
    """Where the library is, or why it is not used."""

    path: Path | None
    reason: str  # why it is not used; "" when it is

    def describe(self) -> str:
        return f"{FILE_NAME} ({self.path})" if self.path else f"not used: {self.reason}"


def status() -> LibraryStatus:
    if os.environ.get("EDGEVIT_NATIVE", "1") == "0":
        return LibraryStatus(None, "EDGEVIT_NATIVE=0")
    override = os.environ.get("EDGEVIT_ORT_LIBRARY")
    if override == "0":
        return LibraryStatus(None, "EDGEVIT_ORT_LIBRARY=0")
    chosen = Path(override) if override else PACKAGED
    if not chosen.is_file():
        where = "EDGEVIT_ORT_LIBRARY names" if override else "the package has"
        hint = "" if override else (" (it is built when ONNX Runtime's headers are there: "
                                    "python native/fetch_ort_headers.py, then reinstall)")
        return LibraryStatus(None, f"{where} no {chosen}{hint}")
    return LibraryStatus(chosen.resolve(), "")


def path() -> Path | None:
    """The library to register with ONNX Runtime, or None (see :func:`status`)."""
    return status().path


def onnx_runtime_path() -> str:
    """How ONNX Runtime runs ``ai.edgevit`` nodes in this process, and why, in one line."""
    library = status()
    if library.path:
        return f"{FILE_NAME} custom ops ({library.path})"
    kernels = bindings.status()
    try:
        import onnxruntime_extensions  # noqa: F401
    except ImportError:
        extensions = "onnxruntime-extensions is not installed (pip install 'edgevit[native]')"
    else:
        extensions = "" if kernels.active else f"edgevit._native is not used: {kernels.reason}"
    if not extensions:
        return f"onnxruntime-extensions Python custom ops calling edgevit._native ({FILE_NAME} {library.describe()})"
    return f"none: {FILE_NAME} {library.describe()}; {extensions}"
