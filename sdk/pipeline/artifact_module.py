"""The module an artifact is traced from: the model behind its input form
(:class:`~edgevit.artifact.input_form.InputForm`) and, optionally, a softmax on its scores.

The same wrapper goes around the folded model that is exported and around the model as
trained that parity answers to, so both see the artifact's input exactly as an app feeds it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..artifact.input_form import InputForm


MODEL_ATTRIBUTE = "model"  # the wrapped model's name: its module paths in a traced program start "model."


class ArtifactModule(torch.nn.Module):
    """``model`` taking ``form``'s input (NHWC and/or 0-255 pixels), softmax on request.

    With ``fold_shape`` (the model's NCHW input shape), pixel normalization is folded into
    the convolution that takes the image directly, when it pads nothing (then it is exact:
    every output reads only real pixels): ``conv(W, p * s + t) = conv(W * s, p) + sum(W * t)``. The model is
    copied first; ``folded_into`` names the convolution (None: kept as a Mul and an Add).
    """

    def __init__(self, model: Any, form: InputForm, softmax: bool = False,
                 fold_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.channels_last = form.layout == "NHWC"
        self.softmax = softmax
        std = torch.tensor(form.std, dtype=torch.float64).reshape(1, -1, 1, 1)
        mean = torch.tensor(form.mean, dtype=torch.float64).reshape(1, -1, 1, 1)
        scale, shift = 1.0 / (255.0 * std), -mean / std  # (p / 255 - mean) / std = p * scale + shift
        self.folded_into = _stem_convolution(model, fold_shape) if form.pixels and fold_shape is not None else None
        if self.folded_into is not None:
            model = copy.deepcopy(model)
            _fold_into(model.get_submodule(self.folded_into), scale, shift)
        self.normalizes = form.pixels and self.folded_into is None  # a Mul and an Add before the model
        if self.normalizes:
            self.register_buffer("scale", scale.float())
            self.register_buffer("shift", shift.float())
        setattr(self, MODEL_ATTRIBUTE, model)

    def forward(self, x):
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        if self.normalizes:
            x = x * self.scale + self.shift
        y = self.model(x)
        return y.softmax(dim=-1) if self.softmax else y


def _stem_convolution(model: Any, shape: tuple[int, ...]) -> str | None:
    """The name of the Conv2d that takes the model's input itself (no op before it), if it
    has no padding; found by running the model once on zeros of ``shape`` (NCHW)."""
    example = torch.zeros(shape)
    channels = shape[1]
    first: list[torch.nn.Module] = []

    def note(module, args):
        if not first:
            first.append(module if args and args[0] is example else None)

    handles = [m.register_forward_pre_hook(note) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    conv = first[0] if first else None
    if conv is None or conv.in_channels != channels or conv.groups != 1 or conv.padding_mode != "zeros" \
            or conv.padding not in ((0, 0), "valid"):
        return None
    return next(name for name, module in model.named_modules() if module is conv)


def _fold_into(conv: torch.nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """``conv`` now computes on pixels what it computed on ``pixels * scale + shift`` (float64 math)."""
    with torch.no_grad():
        weight = conv.weight.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
        bias = bias + (weight * shift.reshape(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        conv.weight.copy_((weight * scale.reshape(1, -1, 1, 1)).to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = torch.nn.Parameter(bias.to(conv.weight.dtype))
        else:
            conv.bias.copy_(bias.to(conv.bias.dtype))


def artifact_module(model: Any, form: InputForm, softmax: bool = False,
                    fold_shape: tuple[int, ...] | None = None) -> Any:
    """``model`` itself for the plain form without softmax, else it wrapped (in eval mode)."""
    if form.is_plain and not softmax:
        return model
    return ArtifactModule(model, form, softmax, fold_shape).eval()
