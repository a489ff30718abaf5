"""Model registry: names -> :class:`~edgevit.models.spec.ModelSpec` (torch-free).

Holds the built-in zoo (:mod:`.catalog`) from the start; :func:`register_model` adds a
model of one's own.
"""

from __future__ import annotations

import difflib

from ..errors import UnsupportedModelError
from .catalog import BUILTIN_MODELS
from .spec import ModelSpec

_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (a name may be registered once)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _register_builtin() -> None:
    for spec in BUILTIN_MODELS:
        register_model(spec)


_register_builtin()


def list_models(family: str | None = None) -> list[str]:
    """Names of every registered model, optionally of one family, sorted."""
    return sorted(n for n, s in _REGISTRY.items() if family is None or s.family == family)


def get_spec(name: str) -> ModelSpec:
    """The spec of ``name``; an unknown name is an error that suggests close names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnsupportedModelError(
            f"unknown model {name!r}{hint} (run 'edgevit models' for the list)"
        ) from None
