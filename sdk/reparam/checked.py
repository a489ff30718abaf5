"""Folding with proof: a folded copy of a model, compared with the original on real inputs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import ExportError, InputError, OutputPathError
from .engine import reparameterize
from .report import FoldReport

FOLD_TOLERANCE = (1e-5, 1e-5)  # (atol, rtol): re-parameterization may only change rounding


def fold_checked(module: Any, name: str, reference: Callable[[np.ndarray], np.ndarray],
                 inputs: Sequence[np.ndarray]) -> tuple[Any, FoldReport]:
    """A folded copy of ``module`` (the original is untouched) and its fold report.

    The copy must match ``reference`` (the unfolded model) on every input within
    :data:`FOLD_TOLERANCE`; a fold that changes the output more is a bug, raised as an
    :class:`ExportError` before anything is converted or written.
    """
    from ..pipeline import torch_reference

    folded = reparameterize(copy.deepcopy(module))
    report: FoldReport = folded.edgevit_reparam_report
    report.model = name
    run_folded = torch_reference(folded)
    atol, rtol = FOLD_TOLERANCE
    worst = 0.0
    for x in inputs:
        ref, got = reference(x), run_folded(x)
        diff = np.abs(got.astype(np.float64) - ref)
        worst = max(worst, float(diff.max()))
        if np.any(diff > atol + rtol * np.abs(ref)):
            raise ExportError(f"re-parameterizing {name} changed its output by {float(diff.max()):.3g} "
                              f"(limit {atol:g} + {rtol:g}*|ref|); use --no-reparam and report this bug")
    report.max_abs_change = worst
    return folded, report


def fold_to_file(model_name: str, output: str | Path, *, weights: Optional[str | Path] = None,
                 num_inputs: int = 2, seed: int = 0) -> FoldReport:
    """Build a registered model, fold it (checked), and save the folded module with ``torch.save``.

    The file holds the whole module (load it with ``torch.load(path, weights_only=False)``;
    it needs edgevit installed). Written atomically: a failure leaves nothing.
    """
    import torch

    from ..api import create_model
    from ..models.registry import get_spec
    from ..paths import ensure_writable_dir, publish, staged_path
    from ..pipeline import torch_reference
    from ..verify import parity_inputs

    output = Path(output)
    if output.is_dir():
        raise OutputPathError(f"{output} is a directory; give the folded model's file name (e.g. folded.pt)")
    if num_inputs < 1:
        raise InputError("the fold check needs at least one input (num_inputs >= 1)")
    spec = get_spec(model_name)
    ensure_writable_dir(output.parent)
    model = create_model(model_name, weights=weights)
    inputs = [x for _, x in parity_inputs((1, *spec.input_size), num_inputs, seed)]
    folded, report = fold_checked(model, model_name, torch_reference(model), inputs)
    with staged_path(output) as staged:
        torch.save(folded, staged)
        publish(staged, output)
    return report
