"""PyTorch backend: an in-memory nn.Module or a saved torch.export program (.pt2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import ArtifactError, first_line
from edgevit.optional import require

from .base import Runtime, TensorInfo


def _import_torch():
    return require("torch", "to run PyTorch models")


class TorchRuntime(Runtime):
    """Runs a PyTorch module in eval mode under ``torch.inference_mode``."""

    backend = "torch"

    def __init__(self, module: Any, input_shape: tuple[int | None, ...], path: Path | None = None,
                 threads: int | None = None) -> None:
        super().__init__(path)
        self._torch = _import_torch()
        if threads:
            self._torch.set_num_threads(threads)
        self.module = module.eval() if hasattr(module, "eval") else module
        self.inputs = [TensorInfo("input", tuple(input_shape), "float32")]
        self.outputs = [TensorInfo("logits", (input_shape[0], None), "float32")]

    @classmethod
    def from_file(cls, path: Path, threads: int | None = None) -> "TorchRuntime":
        """Load a program saved with ``torch.export.save``."""
        torch = _import_torch()
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise ArtifactError(f"cannot load PyTorch program {path}: {first_line(exc)}") from None
        example = program.example_inputs[0][0] if program.example_inputs else None
        shape = tuple(example.shape) if example is not None else (1, 3, None, None)
        return cls(program.module(), shape, path=path, threads=threads)

    def describe(self) -> str:
        return f"torch {self._torch.__version__} (eager, {self._torch.get_num_threads()} threads)"

    def _run(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out = self.module(self._torch.from_numpy(x))
        return out.detach().cpu().numpy()
