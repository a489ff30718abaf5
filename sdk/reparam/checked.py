"""Folding with proof: a folded copy of a model, compared with the original on real inputs."""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import ExportError
from .engine import reparameterize
from .report import FoldReport

FOLD_TOLERANCE = (1e-5, 1e-5)  # (atol, rtol): re-parameterization may only change rounding


def fold_checked(module: Any, name: str, inputs: Sequence[np.ndarray]) -> tuple[Any, FoldReport]:
    """A folded copy of ``module`` (the original is untouched) and its fold report.

    The check measures what the fold changed and nothing else: both the unfolded model and
    the folded copy (its float32 weights, exactly as they will be exported) run in float64
    on every input, and must agree within :data:`FOLD_TOLERANCE`. Comparing two float32
    runs instead would also measure float32 activation rounding, which grows with depth
    (about 2e-5 on a 30-block FMViT-L with O(1) logits) and is not the fold's doing; the
    artifact's end-to-end parity against the unfolded float32 model is checked separately.
    A fold that changes the output more is a bug, raised as an :class:`ExportError` before
    anything is converted or written.
    """
    folded = reparameterize(copy.deepcopy(module))
    report: FoldReport = folded.edgevit_reparam_report
    report.model = name
    report.max_abs_change = check_unchanged(module, folded, inputs, f"re-parameterizing {name}", "--no-reparam")
    return folded, report


def check_unchanged(reference: Any, rewritten: Any, inputs: Sequence[np.ndarray], what: str, opt_out: str) -> float:
    """The largest change ``rewritten`` makes to ``reference``'s output, both run in float64
    on every input; an :class:`ExportError` naming ``what`` (and the ``opt_out`` option)
    when any output moves by more than :data:`FOLD_TOLERANCE`."""
    run_reference = torch_reference(_float64_copy(reference))
    run_rewritten = torch_reference(_float64_copy(rewritten))
    atol, rtol = FOLD_TOLERANCE
    worst = 0.0
    for x in inputs:
        x64 = np.asarray(x, dtype=np.float64)
        ref, got = run_reference(x64), run_rewritten(x64)
        diff = np.abs(got - ref)
        worst = max(worst, float(diff.max()))
        if np.any(diff > atol + rtol * np.abs(ref)):
            raise ExportError(f"{what} changed its output by {float(diff.max()):.3g} "
                              f"(limit {atol:g} + {rtol:g}*|ref|, float64); use {opt_out} and report this bug")
    return worst


def torch_reference(module: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> module(x)`` on numpy arrays, under inference mode (the fold check's runs, and
    the export pipeline's parity reference)."""
    def reference(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return reference


def _float64_copy(module: Any) -> Any:
    """A float64 copy of ``module`` (parameters and buffers), for rounding-free comparison."""
    return copy.deepcopy(module).double()
