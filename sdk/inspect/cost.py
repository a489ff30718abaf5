"""Parameters and GFLOPs of a model, counted the way the papers count them.

"GFLOPs" in the mobile-ViT papers (EdgeNeXt's "MAdds", FMViT's "GFLOPs") are billions of
multiply-adds, as fvcore counts them: one per multiply-add of every convolution, Linear
and matrix product, plus the normalizations (BatchNorm at inference: 2 per element with
an affine, 1 without; LayerNorm/GroupNorm: 5 per element with an affine, 4 without).
Activations, softmax, additions and pooling count zero. EdgeNeXt-XX-Small at 256x256
comes to 261M this way, its published figure.

Counting runs one forward pass under ``torch.utils.flop_counter.FlopCounterMode`` (which
sees every aten op, functional matmuls inside attention included), on the reference
PyTorch attention path (edgevit's native kernels are opaque to the counter).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from edgevit.native.torch_ops import attention_path

from ..errors import InputError
from ..models.factory import create_model, model_input_shape, registered_spec
from ..models.registry import get_spec
from ..reparam import reparameterize


@dataclass(frozen=True)
class ModelCost:
    """What a model costs at one input size."""

    params: int  # of the model as counted (trainable and not)
    macs: int  # multiply-adds of one forward pass, batch 1
    input_shape: tuple[int, ...]
    deployed_params: Optional[int] = None  # after re-parameterization, when asked

    @property
    def gflops(self) -> float:
        """Billions of multiply-adds (the papers' "GFLOPs")."""
        return self.macs / 1e9


def _elementwise(per_element_affine: int, per_element_plain: int, weight_index: int):
    """A flop formula for a normalization: elements of the input times a per-element cost."""

    def formula(*args, out_shape=None, **kwargs) -> int:
        shape = args[0]
        count = 1
        for size in shape:
            count *= size
        has_affine = len(args) > weight_index and args[weight_index] is not None
        # FlopCounterMode counts FLOPs as 2 per multiply-add; report these as multiply-adds
        return 2 * count * (per_element_affine if has_affine else per_element_plain)

    return formula


def _norm_formulas() -> dict[Any, Any]:
    aten = torch.ops.aten
    batch_norm = _elementwise(2, 1, weight_index=1)
    layer_norm = _elementwise(5, 4, weight_index=2)
    group_norm = _elementwise(5, 4, weight_index=1)
    formulas = {
        aten.native_batch_norm: batch_norm,
        aten._native_batch_norm_legit_no_training: batch_norm,
        aten.native_layer_norm: layer_norm,
        aten.native_group_norm: group_norm,
    }
    return formulas


def count_macs(model: Any, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass of ``model`` on a zero tensor of ``input_shape``."""
    _check_module(model)
    shape = tuple(int(s) for s in input_shape)
    if any(s < 1 for s in shape):
        raise InputError(f"input shape {shape} has an empty dimension")
    example = torch.zeros(shape)
    counter = FlopCounterMode(display=False, custom_mapping=_norm_formulas())
    was_training = model.training
    model.eval()
    try:
        with attention_path(model, native_ops=False), counter, torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def _check_module(model: Any) -> None:
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"counting parameters and FLOPs needs a torch.nn.Module, got {type(model).__name__}")


def parameter_count(model: Any) -> int:
    """Every parameter of ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def cost_of(model_or_name: Any, image_size: int | Sequence[int] | None = None) -> ModelCost:
    """The deployed cost of a registered model (built with random weights) or an nn.Module
    at its registered input size, or at ``image_size``."""
    if isinstance(model_or_name, str):
        spec, name = get_spec(model_or_name), model_or_name
        model = create_model(name)
    else:
        model = model_or_name
        spec, name = registered_spec(model)
    return model_cost(model, model_input_shape(model, spec, name, image_size), deployed=True)


def model_cost(model: Any, input_shape: Sequence[int], *, deployed: bool = False) -> ModelCost:
    """Parameters and multiply-adds of ``model``; with ``deployed``, also the parameters
    and multiply-adds of its re-parameterized copy (the original is untouched), which
    are the figures a deployed artifact has."""
    _check_module(model)
    params = parameter_count(model)
    if not deployed:
        return ModelCost(params, count_macs(model, input_shape), tuple(input_shape))
    folded = reparameterize(copy.deepcopy(model))
    return ModelCost(params, count_macs(folded, input_shape), tuple(input_shape), parameter_count(folded))
