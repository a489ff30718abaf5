"""Native C++ kernels for custom attention (built into ``edgevit._native`` when present)."""

from __future__ import annotations

import importlib.util


def available() -> bool:
    """True when the compiled extension ``edgevit._native`` is installed."""
    return importlib.util.find_spec("edgevit._native") is not None
