"""Model zoo: the registry (torch-free) and one module per model family."""

from .registry import ModelSpec, PaperFigures, get_spec, list_models, register_model

__all__ = ["ModelSpec", "PaperFigures", "get_spec", "list_models", "register_model"]
