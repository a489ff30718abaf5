"""The MIL op table: each op's numpy implementation, by name and opset."""

from __future__ import annotations

from typing import Any, Callable

ALL_OPSETS = ("CoreML5", "CoreML6", "CoreML7", "CoreML8", "CoreML9")
_OPS: dict[tuple[str, str], Callable[..., Any]] = {}


def register(name: str, opsets: tuple[str, ...] = ALL_OPSETS):
    """Register ``fn`` as the implementation of MIL op ``name`` in ``opsets``."""
    def wrap(fn):
        for opset in opsets:
            _OPS[(name, opset)] = fn
        return fn
    return wrap


def lookup(name: str, opset: str) -> Callable[..., Any] | None:
    """The implementation of ``name`` in ``opset`` (None when edgevit has none)."""
    return _OPS.get((name, opset))


def implemented_ops() -> list[str]:
    """Names of every implemented op."""
    return sorted({name for name, _ in _OPS})
