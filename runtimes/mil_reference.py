"""A numpy reference interpreter for Core ML ML Programs (runs where Core ML cannot).

It evaluates the ``main`` function of an ``.mlpackage`` op by op with the semantics of
:mod:`.mil_ops`, in the dtypes the program declares (fp16 programs compute in fp16). An
op it does not implement is refused when the program is loaded, naming the op type and
where it is, so a run never silently computes something else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import ArtifactError, UnsupportedOperationError

from .mil_ops import lookup
from .mil_program import Operation, WeightFile, read_program

_VARIADIC = {"values"}  # inputs that take a list (concat)


class MilInterpreter:
    """Load once, then ``run({input_name: array}) -> {output_name: array}``."""

    def __init__(self, spec, package: Path, weights: WeightFile | None = None) -> None:
        self.package = Path(package)
        self.input_names, operations, self.output_names, self.opset = read_program(spec, self.package, weights)
        self._constants: dict[str, Any] = {}
        self._steps: list[tuple[Operation, Any]] = []
        for index, op in enumerate(operations):
            if op.type == "const":
                if "val" not in op.attributes or len(op.outputs) != 1:
                    raise ArtifactError(f"{self.package.name}: const op #{index} '{op.name[:60]}' has no value "
                                        "or not exactly one output")
                self._constants[op.outputs[0]] = op.attributes["val"]
                continue
            fn = lookup(op.type, self.opset)
            if fn is None:
                raise UnsupportedOperationError(
                    f"{self.package.name}: Core ML op '{op.type}' (opset {self.opset}, op #{index} "
                    f"'{op.name}' in function main) is not implemented by edgevit's reference interpreter"
                )
            self._steps.append((op, fn))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = dict(self._constants)
        env.update(feeds)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # fp16 inf/NaN reach the output
            self._evaluate(env)
        return {name: env[name] for name in self.output_names}

    def _evaluate(self, env: dict[str, Any]) -> None:
        for op, fn in self._steps:
            kwargs = {key: self._resolve(env, key, args) for key, args in op.inputs.items()}
            try:
                result = fn(**kwargs)
            except Exception as exc:
                raise UnsupportedOperationError(
                    f"{self.package.name}: op '{op.type}' ('{op.name}') failed in the reference interpreter: {exc}"
                ) from None
            results = result if isinstance(result, tuple) else (result,)
            for name, dtype, value in zip(op.outputs, op.output_dtypes, results):
                if isinstance(value, dict):  # a classifier's class -> score dictionary
                    env[name] = value
                    continue
                value = np.asarray(value)
                env[name] = value.astype(dtype, copy=False) if dtype not in (None, str) else value

    @staticmethod
    def _resolve(env: dict[str, Any], key: str, args: list[tuple[str, Any]]) -> Any:
        values = [env[ref] if kind == "ref" else ref for kind, ref in args]
        return values if key in _VARIADIC or len(values) > 1 else values[0]
