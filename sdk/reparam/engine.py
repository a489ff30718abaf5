"""``reparameterize(model)``: fold every training-time structure a model allows, exactly.

The walk is children-first, so a block has folded its own insides before its parent
looks at it. At each module:

1. a module that knows its own data flow implements ``reparameterize(self) -> None``
   and folds itself with the functions of :mod:`.folds` (calling :func:`fold_children`
   first makes it fold its whole subtree when a user calls it on the block alone);
2. in an ``nn.Sequential`` the data flow is the order of the children, so the generic
   folds apply to every adjacent pair: Conv/Linear then an affine (BatchNorm, RepBN,
   ...), and an affine (or a layer norm's weight and bias) then Conv/Linear where that
   is exact.

Finally every normalization still present is reported as kept, with the reason it could
not fold.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any, Optional

import torch
from torch import nn

from ..errors import InputError
from .folds import FOLDABLE_LAYERS, ChannelAffine, fold_into_next, fold_into_previous, fold_norm_affine
from .report import FoldReport, at, collecting, record

log = logging.getLogger("edgevit.reparam")
_WALKING: contextvars.ContextVar[bool] = contextvars.ContextVar("edgevit_reparam_walking", default=False)


def reparameterize(model: Any) -> Any:
    """Fold ``model`` for deployment, in place, in eval mode; returns the same model.

    The fold report is attached as ``model.edgevit_reparam_report`` (a
    :class:`~edgevit.reparam.report.FoldReport`) and logged at INFO level on the
    ``edgevit.reparam`` logger. Calling it again on a folded model changes nothing.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"reparameterize expects a torch.nn.Module, got {type(model).__name__}")
    model.eval()
    report = FoldReport(model=getattr(model, "edgevit_name", type(model).__name__))
    token = _WALKING.set(True)
    try:
        with collecting(report), torch.no_grad():
            _walk(model, "")
            _audit(model, report)
    finally:
        _WALKING.reset(token)
    model.edgevit_reparam_report = report
    log.info("reparameterized %s: %s", report.model, report.summary())
    return model


def fold_children(module: nn.Module) -> None:
    """Fold everything inside ``module``'s children (children first), as
    :func:`reparameterize` would, so that a block's own ``reparameterize()`` folds the
    whole block when called on its own. During a walk (:func:`reparameterize`, or an
    outer ``fold_children``) the children are already folded and this returns at once."""
    if _WALKING.get():
        return
    token = _WALKING.set(True)
    try:
        with torch.no_grad():
            for name, child in list(module.named_children()):
                _walk(child, name)
    finally:
        _WALKING.reset(token)


def _walk(module: nn.Module, path: str) -> None:
    for name, child in list(module.named_children()):
        _walk(child, f"{path}.{name}" if path else name)
    with at(path):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
        if callable(getattr(module, "reparameterize", None)):
            module.reparameterize()


def _fold_sequential(seq: nn.Sequential) -> None:
    """Generic folds between adjacent children of an ``nn.Sequential`` (its data flow)."""
    names = list(seq._modules)
    for first, second in zip(names, names[1:]):
        layer_first, layer_second = seq._modules[first], seq._modules[second]
        if isinstance(layer_first, FOLDABLE_LAYERS) and fold_into_previous(layer_first, seq, second):
            continue
        if isinstance(layer_second, FOLDABLE_LAYERS):
            fold_into_next(seq, first, layer_second) or fold_norm_affine(seq, first, layer_second)


def _audit(model: nn.Module, report: FoldReport) -> None:
    """Report every normalization the folds left in place (if not already reported)."""
    with at(""):
        covered = [entry.where for entry in report.entries]
        for path, module in model.named_modules():
            if not path or any(path == c or path.startswith(c + ".") for c in covered):
                continue
            reason = _kept_reason(module)
            if reason:
                record("kept", path, reason)
                covered.append(path)  # its children (a PRepBN's LayerNorm) are part of it


def _kept_reason(module: nn.Module) -> Optional[str]:
    kind = type(module).__name__
    if isinstance(module, ChannelAffine):
        return "a per-channel multiply-add (a norm folded earlier) that no neighbouring layer can absorb"
    if isinstance(module, nn.modules.batchnorm._BatchNorm) or hasattr(module, "inference_affine"):
        return (f"{kind} has no Conv or Linear next to it in a data flow edgevit knows "
                "(an nn.Sequential or the block's own reparameterize())")
    if "Norm" in kind:  # LayerNorm, GroupNorm, LayerNorm2d, ...
        return f"{kind} normalizes with statistics of each input at run time; it is not a fixed affine"
    return None
