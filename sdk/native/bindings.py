"""The compiled attention kernels (``edgevit._native``), or why they are not in use.

``pip install`` builds ``edgevit._native`` from ``native/`` with CMake when a C++17 compiler
is there; without one the package installs anyway and every caller falls back to the
reference path (the PyTorch compositions in :mod:`edgevit.models`). Set
``EDGEVIT_NATIVE=0`` to force the reference path, ``EDGEVIT_NATIVE_ISA=baseline`` to use the
portable build of the kernels on a CPU that has AVX2.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import InputError

# Below this much work a call stays on one thread: waking a second one costs more (measured
# in benchmarks/native_attention.py: 2 threads were slower than 1 at edgenext_small's shapes).
MIN_FLOPS_PER_THREAD = 8e6


@dataclass(frozen=True)
class NativeStatus:
    """Which attention path is active, and why."""

    active: bool
    isa: str | None  # "avx2" or "baseline" when active
    sanitized: bool
    reason: str  # why the reference path is used; "" when active

    @property
    def path(self) -> str:
        return "native" if self.active else "reference"

    def describe(self) -> str:
        if self.active:
            return f"native C++ kernels (edgevit._native, {self.isa}{', ASan+UBSan' if self.sanitized else ''})"
        return f"reference PyTorch ops ({self.reason})"


@lru_cache(maxsize=1)
def _module() -> tuple[Any, str]:
    if os.environ.get("EDGEVIT_NATIVE", "1") == "0":
        return None, "EDGEVIT_NATIVE=0"
    try:
        return importlib.import_module("edgevit._native"), ""
    except ImportError as exc:
        return None, f"edgevit._native is not built: {exc}"


def status() -> NativeStatus:
    """The active path: the compiled kernels if they import, else the reference."""
    module, reason = _module()
    if module is None:
        return NativeStatus(False, None, False, reason)
    return NativeStatus(True, module.isa(), bool(module.sanitized), "")


def available() -> bool:
    return _module()[0] is not None


def kernels() -> Any:
    """The ``edgevit._native`` module; InputError naming the reason when it is not in use."""
    module, reason = _module()
    if module is None:
        raise InputError(f"the native attention kernels are not available: {reason}")
    return module


def _threads(flops: float, threads: int | None) -> int:
    wanted = threads if threads and threads > 0 else (os.cpu_count() or 1)
    return max(1, min(wanted, int(flops // MIN_FLOPS_PER_THREAD)))


def _checked_qkv(qkv: np.ndarray, heads: int, op: str) -> tuple[int, int, int]:
    if not isinstance(qkv, np.ndarray) or qkv.dtype != np.float32 or qkv.ndim != 3:
        raise InputError(f"{op}: qkv must be a float32 array of shape (batch, tokens, 3 x channels)")
    if 0 in qkv.shape:
        raise InputError(f"{op}: qkv of shape {qkv.shape} is empty")
    if heads <= 0 or qkv.shape[2] % (3 * heads):
        raise InputError(f"{op}: qkv's last dimension {qkv.shape[2]} is not 3 x heads x head_dim for {heads} heads")
    batch, tokens, width = qkv.shape
    return batch, tokens, width // 3


def _checked_table(table: np.ndarray, shape: tuple[int, ...], op: str, name: str) -> np.ndarray:
    """``table`` as a contiguous float32 array of ``shape`` (leading 1s dropped); InputError otherwise."""
    array = np.asarray(table, np.float32)
    while array.ndim > len(shape) and array.shape[0] == 1:
        array = array[0]
    if array.shape != shape:
        raise InputError(f"{op}: {name} must have shape {shape}, got {np.shape(table)}")
    return np.ascontiguousarray(array)


def _run(op: str, qkv: np.ndarray, table: np.ndarray, table_name: str, heads: int,
         threads: int | None) -> np.ndarray:
    """Checks qkv and the per-op table, then runs kernel ``op``: (B, N, 3C) -> (B, N, C)."""
    batch, tokens, channels = _checked_qkv(qkv, heads, op)
    shape = (heads,) if op == "xca" else (tokens, channels)
    table = _checked_table(table, shape, op, table_name)
    out = np.empty((batch, tokens, channels), np.float32)
    flops = 4.0 * batch * tokens * channels * (channels // heads)
    getattr(kernels(), op)(np.ascontiguousarray(qkv), table, out, heads, _threads(flops, threads))
    return out


def xca(qkv: np.ndarray, temperature: np.ndarray, heads: int, threads: int | None = None) -> np.ndarray:
    """Cross-covariance attention with the C++ kernel: (B, N, 3C) float32 -> (B, N, C)."""
    return _run("xca", qkv, np.reshape(temperature, -1), "temperature", heads, threads)


def sla(qkv: np.ndarray, positional: np.ndarray, heads: int, threads: int | None = None) -> np.ndarray:
    """Simplified linear attention (no DWC) with the C++ kernel: (B, N, 3C) float32 -> (B, N, C)."""
    return _run("sla", qkv, positional, "positional", heads, threads)
