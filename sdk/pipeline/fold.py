"""Fold a registered model and save it (``edgevit reparam``): the fold checked like an export's."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import InputError, OutputPathError
from ..models.factory import create_model
from ..models.registry import get_spec
from ..optional import require
from ..paths import ensure_writable_dir, publish, staged_path
from .parity import parity_inputs


def fold_to_file(model_name: str, output: str | Path, *, weights: Optional[str | Path] = None,
                 num_inputs: int = 2, seed: int = 0):
    """Build a registered model, fold it (checked), and save the folded module with ``torch.save``;
    returns the :class:`~edgevit.reparam.report.FoldReport`.

    The file holds the whole module (load it with ``torch.load(path, weights_only=False)``;
    it needs edgevit installed). Written atomically: a failure leaves nothing.
    """
    torch = require("torch", "to fold models")
    from ..reparam.checked import fold_checked  # torch

    output = Path(output)
    if output.is_dir():
        raise OutputPathError(f"{output} is a directory; give the folded model's file name (e.g. folded.pt)")
    if num_inputs < 1:
        raise InputError("the fold check needs at least one input (num_inputs >= 1)")
    spec = get_spec(model_name)
    ensure_writable_dir(output.parent)
    model = create_model(model_name, weights=weights)
    inputs = [x for _, x in parity_inputs((1, *spec.input_size), num_inputs, seed)]
    folded, report = fold_checked(model, model_name, inputs)
    with staged_path(output) as staged:
        torch.save(folded, staged)
        publish(staged, output)
    return report
