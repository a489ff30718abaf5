"""edgevit: deploy mobile hybrid vision transformers with verified parity.

Importing edgevit is cheap and never imports torch: the public functions live in
:mod:`edgevit.api` and are resolved on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ArtifactError,
    EdgeVitError,
    ExportError,
    InputError,
    MissingDependencyError,
    OutputPathError,
    ParityError,
    UnsupportedModelError,
)

# public functions, defined in edgevit.api; no submodule of edgevit may share one of these names
_API = ("list_models", "create_model", "model_cost", "reparameterize", "use_native", "export", "load", "verify",
        "check", "benchmark", "bundle", "split", "load_plan", "run_plan", "open_plan")

__all__ = [
    "__version__",
    *_API,
    "EdgeVitError",
    "UnsupportedModelError",
    "ArtifactError",
    "InputError",
    "OutputPathError",
    "MissingDependencyError",
    "ExportError",
    "ParityError",
]

if TYPE_CHECKING:  # pragma: no cover
    from .api import (
        benchmark, bundle, check, create_model, export, list_models, load, load_plan, model_cost, open_plan,
        reparameterize, run_plan, split, use_native, verify,
    )


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgevit' has no attribute {name!r}")
