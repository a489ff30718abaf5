"""The compiled attention kernels (``edgevit._native``), or why they are not in use.

``pip install`` builds ``edgevit._native`` from ``native/`` with CMake when a C++17 compiler
is there; without one the package installs anyway and every caller falls back to the
reference path (the PyTorch compositions in :mod:`edgevit.models`). Set
``EDGEVIT_NATIVE=0`` to force the reference path, ``EDGEVIT_NATIVE_ISA=avx2`` or ``=baseline`` to
use a narrower build of the kernels than the widest the CPU runs (AVX-512, AVX2, portable).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class NativeStatus:
    """Which attention path is active, and why."""

    active: bool
    isa: str | None  # "avx512", "avx2" or "baseline" when active
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


def _threads(threads: int | None) -> int:
    """Threads the caller allows (all cores by default); the kernels wake fewer for small calls
    (``edgevit._native.min_flops_per_thread`` of work per thread)."""
    return threads if threads and threads > 0 else (os.cpu_count() or 1)


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
    _call(getattr(kernels(), op), np.ascontiguousarray(qkv), table, out, heads, _threads(threads))
    return out


def _call(kernel, *args) -> None:
    """A kernel call whose refusal (ValueError: a limit the kernels enforce) is an InputError."""
    try:
        kernel(*args)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def xca(qkv: np.ndarray, temperature: np.ndarray, heads: int, threads: int | None = None) -> np.ndarray:
    """Cross-covariance attention with the C++ kernel: (B, N, 3C) float32 -> (B, N, C)."""
    return _run("xca", qkv, np.reshape(temperature, -1), "temperature", heads, threads)


def sla(qkv: np.ndarray, positional: np.ndarray, heads: int, threads: int | None = None) -> np.ndarray:
    """Simplified linear attention (no DWC) with the C++ kernel: (B, N, 3C) float32 -> (B, N, C)."""
    return _run("sla", qkv, positional, "positional", heads, threads)


def rlmhsa(q: np.ndarray, kv: np.ndarray, heads: int, threads: int | None = None) -> np.ndarray:
    """FMViT's attention over pooled keys with the C++ kernel: q (B, C, ...) float32, already
    scaled, and kv (B, 2C, ...) (keys, then values), channels first -> q's shape."""
    for name, array in (("q", q), ("kv", kv)):
        if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.ndim < 3:
            raise InputError(f"rlmhsa: {name} must be a float32 array of shape (batch, channels, tokens...)")
        if 0 in array.shape:
            raise InputError(f"rlmhsa: {name} of shape {array.shape} is empty")
    batch, channels = q.shape[:2]
    if heads <= 0 or channels % heads:
        raise InputError(f"rlmhsa: q's {channels} channels are not heads x head_dim for {heads} heads")
    if kv.shape[:2] != (batch, 2 * channels):
        raise InputError(f"rlmhsa: kv must have batch {batch} and {2 * channels} channels, got shape {kv.shape}")
    out = np.empty(q.shape, np.float32)
    _call(kernels().rlmhsa, np.ascontiguousarray(q).reshape(batch, channels, -1),
          np.ascontiguousarray(kv).reshape(batch, 2 * channels, -1), out.reshape(batch, channels, -1), heads,
          _threads(threads))
    return out
