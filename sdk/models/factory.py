"""Building models: :func:`create_model` (a registered name -> an nn.Module in eval mode),
the spec of a module built so, and the input shapes a model accepts.

Everything that builds a model goes through here: the API, the export pipeline, the fold
command, ED-ViT's training and checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..errors import EdgeVitError, InputError
from ..optional import require
from .registry import get_spec
from .spec import ModelSpec


def create_model(name: str, *, weights: str | Path | None = None, num_classes: int | None = None,
                 pretrained_layout: str = "auto", **config: Any) -> Any:
    """Build a registered model in eval mode, loading ``weights`` strictly if given.

    ``config`` overrides the registered architecture settings, e.g. ``img_size=32,
    patch_size=8`` for a DeiT on small images; an unknown setting is an InputError.

    Without ``weights`` the model has deterministic random weights (seed 0), so that an
    export and a later ``verify`` in another process agree.

    ``weights`` may be in edgevit's layout, the official repository's or timm's
    (``pretrained_layout="auto"`` detects which).
    """
    spec = get_spec(name)
    torch = require("torch", "to build PyTorch models")
    classes = spec.num_classes if num_classes is None else int(num_classes)
    if classes < 1:
        raise InputError(f"num_classes must be positive, got {num_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random weights are the same in every process (seed 0)
        try:
            model = spec.resolve_builder()(num_classes=classes, **{**spec.config, **config})
        except (TypeError, ValueError) as exc:
            if not config:
                raise
            raise InputError(f"{name} cannot be built with {config}: {exc}") from None
    model.edgevit_name = name
    model.edgevit_config = dict(config)
    if weights is not None:
        from .checkpoints import load_weights  # torch

        load_weights(model, spec, weights, pretrained_layout)
    return model.eval()


def resolve_model(model: Any, weights: str | Path | None = None) -> tuple[ModelSpec | None, Any, str]:
    """(spec, module in eval mode, name) for a registered name (built with ``weights``) or an
    nn.Module (``weights`` must then be None)."""
    if isinstance(model, str):
        return get_spec(model), create_model(model, weights=weights), model
    if weights is not None:
        raise EdgeVitError("weights can only be given with a registered model name")
    if not hasattr(model, "forward"):
        raise InputError(f"expected a model name or a torch.nn.Module, got {type(model).__name__}")
    spec, name = registered_spec(model)
    return spec, model.eval(), name


def registered_spec(module: Any) -> tuple[ModelSpec | None, str]:
    """The spec and name of a module built by ``create_model`` (then perhaps fine-tuned);
    other modules have no spec and are named after their class."""
    name = getattr(module, "edgevit_name", None)
    if name:
        try:
            return get_spec(name), name
        except EdgeVitError:
            pass
    return None, name or type(module).__name__.lower()


def model_input_shape(module: Any, spec: ModelSpec | None, name: str, image_size, image=None) -> tuple[int, ...]:
    """The batch-1 input shape to export at, checked against what the model accepts."""
    declared = getattr(module, "input_size", None)  # the module's own size wins over its spec's
    native = tuple(declared or (spec.input_size if spec else (3, 224, 224)))
    if len(native) != 3:  # not an image model
        if image_size is not None or image is not None:
            raise InputError(f"{name} takes {native}-shaped inputs, not images: drop the image size and image")
        return (1, *native)
    height, width = _image_hw(image_size, native[1:])
    if declared is not None or (spec is not None and spec.fixed_size):
        if (height, width) != native[1:]:
            raise InputError(f"{name} has position tables learned for {native[1]}x{native[2]} "
                             f"inputs; export it at that size, not {height}x{width}")
    else:
        multiple = spec.size_multiple if spec else 1
        if height % multiple or width % multiple or height <= 0 or width <= 0:
            raise InputError(f"image size {height}x{width} does not fit {name}: use multiples of {multiple}")
    return (1, native[0], height, width)


def _image_hw(image_size: int | Sequence[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    if image_size is None:
        return default
    if isinstance(image_size, int):
        return (image_size, image_size)
    hw = tuple(int(v) for v in image_size)
    if len(hw) != 2:
        raise InputError(f"image size must be one number or (height, width), got {image_size!r}")
    return hw  # type: ignore[return-value]
