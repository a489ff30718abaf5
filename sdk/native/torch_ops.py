"""PyTorch side of the native kernels: ``torch.ops.edgevit.xca`` / ``.sla`` / ``.rlmhsa`` and ``use_native``.

The ops are ``torch.library`` custom ops with fake implementations, so ``torch.export`` traces
them as single nodes (and the ONNX exporter can emit them as ``ai.edgevit`` nodes). They run
``edgevit._native`` on float32 CPU tensors and the reference PyTorch composition otherwise
(no compiled kernels, other dtypes or devices). Their gradients come from the reference.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..errors import InputError
from ..models.edgenext_layers import XCA, cross_covariance_attention
from ..models.fmvit import RLMHSA, pooled_attention
from ..models.slab_layers import SimplifiedLinearAttention, simplified_linear_attention
from . import bindings as native


def _kernel_or_reference(kernel, reference, first: torch.Tensor, second: torch.Tensor, heads: int) -> torch.Tensor:
    """``kernel`` (the C++ op on numpy) on float32 CPU tensors when the kernels are built,
    else the PyTorch ``reference``."""
    if not (native.available() and first.dtype == torch.float32 and first.device.type == "cpu"):
        return reference(first, second, heads)
    out = kernel(first.detach().contiguous().numpy(), second.detach().float().contiguous().numpy(), heads,
                 threads=torch.get_num_threads())
    return torch.from_numpy(out)


@torch.library.custom_op("edgevit::xca", mutates_args=())
def xca(qkv: torch.Tensor, temperature: torch.Tensor, heads: int) -> torch.Tensor:
    """Cross-covariance attention, (B, N, 3C) -> (B, N, C); temperature (heads,)."""
    return _kernel_or_reference(native.xca, cross_covariance_attention, qkv, temperature, heads)


@torch.library.custom_op("edgevit::sla", mutates_args=())
def sla(qkv: torch.Tensor, positional: torch.Tensor, heads: int) -> torch.Tensor:
    """Simplified linear attention without DWC, (B, N, 3C) -> (B, N, C); positional N x C."""
    return _kernel_or_reference(native.sla, simplified_linear_attention, qkv, positional, heads)


@torch.library.custom_op("edgevit::rlmhsa", mutates_args=())
def rlmhsa(q: torch.Tensor, kv: torch.Tensor, heads: int) -> torch.Tensor:
    """FMViT's attention over pooled keys, q (B, C, H, W) scaled, kv (B, 2C, H', W') -> (B, C, H, W)."""
    return _kernel_or_reference(native.rlmhsa, pooled_attention, q, kv, heads)


def _tokens_out(qkv: torch.Tensor, other: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, width = qkv.shape
    return qkv.new_empty(batch, tokens, width // 3)


xca.register_fake(_tokens_out)
sla.register_fake(_tokens_out)
rlmhsa.register_fake(lambda q, kv, heads: q.new_empty(q.shape))


def _save_inputs(ctx, inputs, output) -> None:
    qkv, other, heads = inputs
    ctx.save_for_backward(qkv, other)
    ctx.heads = heads


def _reference_backward(reference):
    def backward(ctx, grad: torch.Tensor):
        qkv, other = ctx.saved_tensors
        with torch.enable_grad():
            inputs = (qkv.detach().requires_grad_(), other.detach().requires_grad_())
            out = reference(*inputs, ctx.heads)
            grads = torch.autograd.grad(out, inputs, grad)
        return grads[0], grads[1], None
    return backward


xca.register_autograd(_reference_backward(cross_covariance_attention), setup_context=_save_inputs)
sla.register_autograd(_reference_backward(simplified_linear_attention), setup_context=_save_inputs)
rlmhsa.register_autograd(_reference_backward(pooled_attention), setup_context=_save_inputs)


# The native classes run their op in the trained form and in the channels_last form (tokens
# in and out: the ONNX export's); the channels_first form (Core ML, 1x1-conv projections)
# keeps its PyTorch attention, since the ops take tokens, not channel blocks.

class NativeXCA(XCA):
    """:class:`XCA` whose attention is one ``edgevit::xca`` op."""

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        return torch.ops.edgevit.xca(qkv, self.temperature.reshape(-1), self.num_heads)

    def attend_channels_last(self, qkv: torch.Tensor) -> torch.Tensor:
        return self.attend(qkv)  # tokens (B, N, 3C) in, (B, N, C) out, as trained


class NativeSimplifiedLinearAttention(SimplifiedLinearAttention):
    """:class:`SimplifiedLinearAttention` whose attention is one ``edgevit::sla`` op."""

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        tokens = self.positional_encoding.shape[1]
        return torch.ops.edgevit.sla(qkv, self.positional_encoding.reshape(tokens, -1), self.num_heads)

    def attend_tokens(self, qkv: torch.Tensor) -> torch.Tensor:
        """The target forms' tokens, (B, N, 3C) -> (B, N, C): the op, and the conv on V as
        trained (its bias is in proj's once the form is taken)."""
        return self.attend(qkv) + self.local_mixing(qkv)


class NativeRLMHSA(RLMHSA):
    """:class:`~edgevit.models.fmvit.RLMHSA` whose attention is one ``edgevit::rlmhsa`` op."""

    def attend(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        if self.form == "channels_first":
            return super().attend(q, kv)
        return torch.ops.edgevit.rlmhsa(q, kv, self.num_heads)


_NATIVE = {XCA: NativeXCA, SimplifiedLinearAttention: NativeSimplifiedLinearAttention, RLMHSA: NativeRLMHSA}
_REFERENCE = {native_cls: cls for cls, native_cls in _NATIVE.items()}


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The XCA, simplified-linear-attention and RLMHSA modules of ``model``, either path."""
    kinds = tuple(_NATIVE) + tuple(_REFERENCE)
    return [m for m in model.modules() if type(m) in kinds]


def use_native(model: nn.Module, enable: bool = True) -> nn.Module:
    """Switch ``model``'s attention modules to the native ops (``enable=False``: back to PyTorch ops).

    Weights, state-dict keys and outputs (within 1e-5) are unchanged. Without the compiled
    kernels the ops run the reference path; :func:`edgevit.native.status` says which.
    """
    found = attention_modules(model)
    if not found:
        raise InputError("the model has no XCA, simplified linear attention or RLMHSA module to switch to "
                         "native kernels")
    table = _NATIVE if enable else _REFERENCE
    for module in found:
        module.__class__ = table.get(type(module), type(module))
    return model


@contextmanager
def attention_path(model: nn.Module, native_ops: bool) -> Iterator[nn.Module]:
    """Within the block, ``model``'s attention runs as native ops or as PyTorch ops; restored after."""
    found = attention_modules(model)
    before = [type(m) for m in found]
    table = _NATIVE if native_ops else _REFERENCE
    try:
        for module in found:
            module.__class__ = table.get(type(module), type(module))
        yield model
    finally:
        for module, cls in zip(found, before):
            module.__class__ = cls
