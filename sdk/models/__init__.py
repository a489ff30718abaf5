"""Model zoo: specs, the registry and the catalog (torch-free), one module per model family,
and :mod:`.factory` (``create_model``), the one place models are built."""

from .registry import get_spec, list_models, register_model
from .spec import ModelSpec, PaperFigures

__all__ = ["ModelSpec", "PaperFigures", "get_spec", "list_models", "register_model"]
