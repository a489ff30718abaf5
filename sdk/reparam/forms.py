"""Target forms: the same model, rewritten into the layout its target runs best.

Converters translate a model op by op; they do not change its layout. edgevit knows the
model, so before tracing it can ask it for the form that suits the target:

- ``channels_first`` (Core ML): NCHW end to end, Linears as 1x1 convolutions, norms over
  the channel axis, attention in the (heads, channels, tokens) layout: no transposes left
  between blocks (Apple's guidance for transformers on the Neural Engine);
- ``channels_last`` (TFLite, ONNX Runtime): NHWC end to end, so XNNPACK's and ONNX
  Runtime's last-axis LayerNorm and MatMul kernels read the residual stream as it lies;
  only the depth-wise convolutions see NCHW, and the converters cancel those transposes;
- ``mobile`` (ONNX for ONNX Runtime Mobile's NNAPI and Core ML execution providers):
  ``channels_last`` computed from the operators those providers take
  (:mod:`edgevit.reparam.mobile_ops`), so that the graph stays one partition.

One protocol, like :func:`edgevit.reparameterize`: a module that can change its form
implements ``to_form(self, form: str) -> None``, takes charge of its whole subtree (a
layout is a contract between a block and its neighbours, so the top-most module that
knows the form converts everything under it) and calls :func:`record_change` for what
it changed. :func:`to_form` walks the model top-down to those modules. A form computes the
same function as the model as trained; :func:`form_checked` proves it (float64, the fold
tolerance) before anything is traced.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from .checked import check_unchanged
from .mobile_ops import lower_for_mobile
from .report import FoldEntry, at, collecting, current_path, record

FORMS = ("channels_first", "channels_last")  # the layouts a model implements in its to_form
MOBILE = "mobile"  # channels_last with ONNX Runtime Mobile's operators (reparam.mobile_ops)
TARGET_FORMS = {  # measured: benchmarks/target_forms.py
    "coreml": "channels_first",
    "tflite": "channels_last",
    "onnx": "channels_last",
}

__all__ = ["FORMS", "MOBILE", "TARGET_FORMS", "FormReport", "form_for", "to_form", "form_checked", "record_change",
           "convert_children"]


@dataclass
class FormReport:
    """What :func:`to_form` changed: one entry per module that took the form."""

    model: str = ""
    form: str = ""
    entries: list[FoldEntry] = field(default_factory=list)  # action "changed"
    max_abs_change: Optional[float] = None  # vs the model as trained, float64, when checked

    @property
    def changed(self) -> bool:
        return bool(self.entries)

    def counts(self) -> dict[str, int]:
        """Changes by kind ("ConvEncoder: ...": 9, ...)."""
        counts: dict[str, int] = {}
        for entry in self.entries:
            counts[entry.detail] = counts.get(entry.detail, 0) + 1
        return counts

    def to_dict(self, entries: bool = True) -> dict[str, Any]:
        data = {"model": self.model, "form": self.form, "changed": len(self.entries),
                "change_counts": self.counts(), "max_abs_change": self.max_abs_change}
        if entries:
            data["entries"] = [asdict(e) for e in self.entries]
        return data

    def summary(self) -> str:
        if not self.entries:
            return f"{self.model} has no {self.form} form; exported as trained"
        return f"{self.form}: {len(self.entries)} modules rewritten"


def form_for(target: str) -> str:
    """The form ``target`` gets (:data:`TARGET_FORMS`)."""
    try:
        return TARGET_FORMS[target]
    except KeyError:
        raise InputError(f"no target form for {target!r}: choose {', '.join(TARGET_FORMS)}") from None


def record_change(name: str, detail: str) -> None:
    """Report that the child ``name`` (relative to the converting module; "" for itself) changed."""
    record("changed", name, detail)


def convert_children(module: Any, form: str) -> None:
    """Convert each child of ``module`` that has ``form`` (and the children of those that
    do not), reporting under each child's own path: for a module's ``to_form``."""
    prefix = current_path()
    for name, child in module.named_children():
        _walk(child, f"{prefix}.{name}" if prefix else name, form)


def to_form(model: Any, form: str) -> FormReport:
    """Rewrite ``model`` into ``form``, in place (eval mode); returns what changed.

    A model without that form is left as it is (an empty report). The report is also
    attached as ``model.edgevit_form_report``.
    """
    if form not in (*FORMS, MOBILE):
        raise InputError(f"unknown form {form!r}: choose {', '.join(FORMS)} or {MOBILE}")
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"to_form expects a torch.nn.Module, got {type(model).__name__}")
    model.eval()
    report = FormReport(model=getattr(model, "edgevit_name", type(model).__name__), form=form)
    with collecting(report), torch.no_grad():
        _walk(model, "", "channels_last" if form == MOBILE else form)
        if form == MOBILE:
            lower_for_mobile(model)
            record_change("", "GELU, LayerNorm, L2 norms, largest magnitudes and uneven splits in the operators "
                              "of ONNX Runtime Mobile's NNAPI and Core ML execution providers")
    model.edgevit_form_report = report
    return report


def _walk(module: Any, path: str, form: str) -> None:
    if callable(getattr(module, "to_form", None)):
        with at(path):
            module.to_form(form)
        return
    for name, child in module.named_children():
        _walk(child, f"{path}.{name}" if path else name, form)


def form_checked(module: Any, name: str, form: str, inputs: Sequence[np.ndarray],
                 reference: Any = None) -> tuple[Any, FormReport]:
    """A copy of ``module`` in ``form`` (the original is untouched) and its report, checked
    against ``reference`` (default: ``module``; the pipeline passes the model as trained)
    in float64 on every input, within the fold tolerance. A model without the form comes
    back as the same object, unchecked."""
    rewritten = copy.deepcopy(module)
    report = to_form(rewritten, form)
    report.model = name
    if not report.changed:
        return module, report
    report.max_abs_change = check_unchanged(reference if reference is not None else module, rewritten, inputs,
                                            f"rewriting {name} into its {form} form", "--no-target-form")
    return rewritten, report
