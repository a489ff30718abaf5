"""The PyTorch side of an export: the model folded once, rewritten into each target's form,
wrapped in each input form and traced with torch.export, each step done once however many
targets share it; and the model as trained, wrapped the same way, as parity's reference."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from edgevit.native.torch_ops import attention_path

from ..artifact.input_form import InputForm
from ..errors import ExportError, first_line
from ..reparam.checked import fold_checked, torch_reference
from ..reparam.forms import MOBILE, form_checked, form_for
from .artifact_module import artifact_module

Progress = Callable[[str], None]


class ModelSide:
    """The model as trained (the reference every artifact answers to) and its traced programs.

    ``checks`` are the parity inputs (normalized NCHW): every fold and form is checked on
    them against the model as trained. ``reparam`` folds the model first (see
    :func:`edgevit.reparameterize`); ``fold_summary`` says what was folded (None: not folded).
    """

    def __init__(self, trained: Any, name: str, shape: tuple[int, ...], checks: Sequence[np.ndarray], *,
                 reparam: bool, with_softmax: bool, seed: int, say: Progress) -> None:
        self.trained, self.name, self.shape, self.checks = trained, name, shape, list(checks)
        self.reparam, self.with_softmax, self.say = reparam, with_softmax, say
        self.example = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
        self.folded, self.fold_summary = trained, None
        if reparam:
            say(f"re-parameterizing {name}")
            self.folded, report = fold_checked(trained, name, self.checks)
            self.fold_summary = report.to_dict(entries=False)
        self._rewritten: dict[str | None, tuple[Any, dict[str, Any] | None]] = {}  # model form (None: as trained)
        self._traced: dict[tuple[str | None, InputForm], tuple[Any, Any, Any]] = {}

    def program(self, model_form: str | None, form: InputForm) -> tuple[Any, Any, Any, dict[str, Any] | None]:
        """(module, example, torch.export program, form summary) for the model in
        ``model_form`` (:mod:`edgevit.reparam.forms`; None: as trained) behind the input ``form``."""
        if model_form not in self._rewritten:
            self._rewritten[model_form] = self._rewrite(model_form)
        module, form_summary = self._rewritten[model_form]
        if (model_form, form) not in self._traced:
            wrapped = artifact_module(module, form, self.with_softmax, fold_shape=self.shape if self.reparam else None)
            if getattr(wrapped, "folded_into", None):
                self.say(f"pixel normalization folded into {wrapped.folded_into}")
            self._traced[model_form, form] = self._trace(wrapped, form)
        return (*self._traced[model_form, form], form_summary)

    def reference(self, form: InputForm) -> Callable[[np.ndarray], np.ndarray]:
        """The model as trained, taking ``form``'s input: what the artifact must compute."""
        return reference(self.trained, form, self.with_softmax)

    def _rewrite(self, model_form: str | None) -> tuple[Any, dict[str, Any] | None]:
        """(the folded model in ``model_form``, summary of the rewrite or None), checked
        against the model as trained; the folded model itself for None (as trained)."""
        if model_form is None:
            return self.folded, None
        self.say(f"rewriting {self.name} into its {model_form} form")
        rewritten, report = form_checked(self.folded, self.name, model_form, self.checks, reference=self.trained)
        if not report.changed:
            self.say(report.summary())
            return self.folded, None
        return rewritten, report.to_dict(entries=False)

    def _trace(self, module: Any, form: InputForm) -> tuple[Any, Any, Any]:
        """(module, example in ``form``, torch.export program) for one input form."""
        example = torch.from_numpy(form.from_normalized(self.example.numpy()))
        shape_text = "x".join(map(str, example.shape))
        self.say(f"tracing {self.name} at {shape_text} ({form.describe()}) with torch.export")
        try:
            with torch.inference_mode():
                module(example)
            with attention_path(module, native_ops=False):  # standard ops unless the exporter asks
                program = torch.export.export(module, (example,))
        except Exception as exc:
            raise ExportError(f"torch.export could not trace {self.name} at {shape_text}: {first_line(exc)}") from None
        return module, example, program


def model_form(target: str, target_form: bool, ep: str | None) -> str | None:
    """The form ``target``'s model is exported in: the ``mobile`` form for an ONNX Runtime
    Mobile ``ep``, else the target's (None: as trained, ``target_form`` off)."""
    if ep is not None:
        return MOBILE
    return form_for(target) if target_form else None


def reference(module: Any, form: InputForm, softmax: bool) -> Callable[[np.ndarray], np.ndarray]:
    """``module`` as a numpy function taking ``form``'s input (softmax on its scores on
    request): the parity reference for an artifact in that form."""
    return torch_reference(artifact_module(module, form, softmax))


def num_classes(module: Any, shape: tuple[int, ...]) -> int:
    """Size of the model's output for one input (run once on zeros)."""
    with torch.inference_mode():
        return int(module(torch.zeros(shape)).reshape(1, -1).shape[1])
