"""ONNX Runtime backend: CPU by default; execution providers (TensorRT, CUDA, ...) on request,
best first, with the providers the session really uses reported (ONNX Runtime itself falls
back to the CPU without a word when a GPU provider is missing or fails)."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgevit.artifact.metadata import METADATA_KEY
from edgevit.errors import ArtifactError, EdgeVitError, first_line
from edgevit.native import onnx_nodes
from edgevit.optional import require

from .base import Runtime, TensorInfo
from .files import read_regular_file

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}
_FATAL_ONLY = 4  # onnxruntime log severity: its own error lines (with colour codes) stay off stderr
_EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"


def _import_ort():
    ort = require("onnxruntime", "to run .onnx artifacts")
    if not os.environ.get("EDGEVIT_DEBUG"):
        ort.set_default_logger_severity(_FATAL_ONLY)
    return ort


CPU = "CPUExecutionProvider"
# what a Jetson (JetPack's onnxruntime-gpu) offers, best first
GPU_PROVIDERS = ("tensorrt", "cuda", "cpu")

Provider = Any  # a name ("cuda", "CUDAExecutionProvider") or (name, {option: value})


def provider_name(name: str, known: Sequence[str]) -> str:
    """``"tensorrt"`` / ``"TensorRT"`` / ``"TensorrtExecutionProvider"`` -> ONNX Runtime's name
    (an EdgeVitError naming the choices for anything ONNX Runtime does not know)."""
    wanted = str(name).strip().lower()
    for full in known:
        if wanted in (full.lower(), full.lower().removesuffix("executionprovider")):
            return full
    short = ", ".join(full.removesuffix("ExecutionProvider").lower() for full in known)
    raise EdgeVitError(f"unknown execution provider {name!r}: choose from {short}")


def parse_providers(text: str) -> list[str]:
    """``"tensorrt,cuda,cpu"`` (the CLI's --providers) -> the list of names, order kept."""
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if not names:
        raise EdgeVitError("--providers needs at least one name, e.g. --providers cuda,cpu")
    return names


def _tensor_info(arg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    return TensorInfo(arg.name, shape, _ORT_DTYPES.get(arg.type, arg.type))


class OnnxRuntime(Runtime):
    """Runs an .onnx file with onnxruntime.InferenceSession, from the bytes edgevit read and
    digested (so ONNX Runtime never opens another file: external data is refused)."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None,
                 providers: Sequence[Provider] | None = None) -> None:
        """``providers``: execution providers, best first, each a name or (name, options);
        those missing from this onnxruntime build are skipped and reported by ``describe()``."""
        super().__init__(path)
        ort = _import_ort()
        self._ort = ort
        data = read_regular_file(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3 if os.environ.get("EDGEVIT_DEBUG") else _FATAL_ONLY
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        chosen = self._choose_providers(providers or [CPU])
        # a model given as bytes resolves external data against the working directory: point
        # ONNX Runtime at an empty folder instead, so no file outside the artifact is read
        with tempfile.TemporaryDirectory(prefix="edgevit-no-external-data-") as empty:
            options.add_session_config_entry(_EXTERNAL_DATA_FOLDER, empty)
            try:
                self.session = ort.InferenceSession(data, options, providers=chosen)
            except Exception as exc:  # InvalidProtobuf, Fail, InvalidGraph, ...
                if "External data" in str(exc):
                    raise ArtifactError(f"cannot load ONNX model {path}: it keeps tensors in external data files, "
                                        "which edgevit does not read (export it as one file)") from None
                if onnx_nodes.DOMAIN not in str(exc):
                    raise ArtifactError(f"cannot load ONNX model {path}: {first_line(exc)}") from None
                self.session = onnx_nodes.session(path, data, options, chosen)  # edgevit's fused attention
                self.app_metadata["native_ops"] = onnx_nodes.DOMAIN
        try:
            self.inputs = [_tensor_info(a) for a in self.session.get_inputs()]
            self.outputs = [_tensor_info(a) for a in self.session.get_outputs()]
            props = self.session.get_modelmeta().custom_metadata_map
        except (UnicodeDecodeError, RuntimeError) as exc:
            raise ArtifactError(f"cannot load ONNX model {path}: its names or metadata are not valid "
                                f"({first_line(exc)})") from None
        if not self.inputs or not self.outputs:
            raise ArtifactError(f"cannot load ONNX model {path}: the graph has no inputs or no outputs")
        if METADATA_KEY in props:
            self._read_metadata(props[METADATA_KEY])
        self._note_integrity([data])
        self._run_failure = ""
        self.session.disable_fallback()  # ONNX Runtime's own prints to stdout; _run reports instead
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = options.log_severity_level

    def _choose_providers(self, providers: Sequence[Provider]) -> list[Provider]:
        """The requested providers this build has, in order (the CPU last if none is left);
        ``self.requested`` keeps ONNX Runtime's names of all that were asked for."""
        known, available = self._ort.get_all_providers(), set(self._ort.get_available_providers())
        self.requested: list[str] = []
        chosen: list[Provider] = []
        for provider in providers:
            name, options = provider if isinstance(provider, tuple) and len(provider) == 2 else (provider, None)
            if not isinstance(name, str) or not (options is None or isinstance(options, dict)):
                raise EdgeVitError(f"an execution provider is a name or (name, {{option: value}}), not {provider!r}")
            full = provider_name(name, known)
            self.requested.append(full)
            if full in available:
                chosen.append((full, dict(options)) if options else full)
        return chosen or [CPU]

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on now, best first (ONNX Runtime's names)."""
        return list(self.session.get_providers())

    @property
    def fallback(self) -> str:
        """Why the best requested provider is not in use ("" when it is): not in this build,
        failed to start, or failed during a run."""
        used = self.providers
        if not self.requested or self.requested[0] in used:
            return ""
        if self._run_failure:
            return self._run_failure
        available = set(self._ort.get_available_providers())
        return "; ".join(f"{name} {'failed to start or run' if name in available else 'is not in this onnxruntime build'}"
                         for name in self.requested if name not in used)

    def describe(self) -> str:
        fallback = self.fallback
        note = f"; fell back: {fallback}" if fallback else ""
        return f"onnxruntime {self._ort.__version__} ({self.providers[0]}{note})"

    def _run(self, x: np.ndarray) -> np.ndarray:
        feed = {self.inputs[0].name: x}
        try:
            return self.session.run(None, feed, self._run_options)[0]
        except Exception as exc:
            if type(exc).__name__ != "EPFail" or self.providers == [CPU]:
                raise
            # a GPU provider failed on this input: say so, and run this and later inputs on the CPU
            self._run_failure = f"{self.providers[0]} failed during a run ({first_line(exc)})"
            self.session.set_providers([CPU])
            return self.session.run(None, feed, self._run_options)[0]

    def op_census(self) -> dict[str, int]:
        onnx = require("onnx", "to list the operators of .onnx files")
        try:
            model = onnx.load_model_from_string(read_regular_file(self.path))
        except Exception as exc:  # DecodeError
            raise ArtifactError(f"cannot read the graph of {self.path}: {first_line(exc)}") from None
        return dict(Counter(n.op_type for n in model.graph.node).most_common())
