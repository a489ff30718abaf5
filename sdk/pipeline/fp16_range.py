"""fp16 range analysis: would the program overflow if it computed in half precision?

An fp16 program (``--precision fp16`` on Core ML and TFLite, which is how an iPhone's GPU
and Neural Engine and most phone GPUs run it, and the fp16 program under Core ML's W8A8)
holds every intermediate tensor in fp16, whose largest finite value is 65504. A value past
it becomes ``inf`` and the output turns to NaN or garbage, on the device only: parity runs
on a Linux CPU, where fp16 TFLite computes in fp32 and random inputs rarely reach the
ranges trained weights reach on real images.

Before an fp16 artifact is written, the exact program that will be converted (the
torch.export graph, in the target's form and input form) runs in float32 on the
verification inputs (:mod:`edgevit.pipeline.checks`), node by node, and the largest
magnitude of every floating-point tensor it makes (weights included) is recorded. Over
:data:`LIMIT` the export is refused, naming the op, the module it belongs to and the
magnitude.

The margin (:data:`MARGIN`, a factor of 2, one binade) is for what the sample cannot show:
a deployed model meets inputs that reach further than the verification inputs. Measured for
the zoo by ``benchmarks/fidelity.py`` (models trained on digits: the largest magnitude over
the whole unseen test split against the largest over the verification inputs) that ratio
was at most 1.2 (docs/fidelity.md). Not covered: a device that keeps a matmul's or a
reduction's partial sums in fp16 can pass the final value when terms cancel; that is not
measured here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

FP16_MAX = 65504.0
MARGIN = 2.0
LIMIT = FP16_MAX / MARGIN
_SHOWN = 5  # peaks kept in the report


@dataclass
class TensorPeak:
    """The largest magnitude one tensor of the program reached over the inputs."""

    node: str  # the torch.export node name (``matmul_2``; ``p_blocks_0_attn_qkv_weight`` for a weight)
    op: str  # the aten op (``aten.matmul.default``), or ``weight``
    module: str  # the model's module that made it (``blocks.0.attn``), "" at the top
    max_abs: float


@dataclass
class Fp16RangeReport:
    """The largest magnitudes the program reached and the verdict against :data:`LIMIT`."""

    inputs: int
    peaks: list[TensorPeak] = field(default_factory=list)  # the largest, descending
    limit: float = LIMIT

    @property
    def max_abs(self) -> float:
        return self.peaks[0].max_abs if self.peaks else 0.0

    @property
    def headroom(self) -> float:
        """The largest magnitude as a share of fp16's largest value (1.0: it overflows)."""
        return self.max_abs / FP16_MAX

    @property
    def passed(self) -> bool:
        return math.isfinite(self.max_abs) and self.max_abs <= self.limit

    def reason(self) -> str:
        """One line: where the program goes out of fp16's safe range, and by how much."""
        worst = self.peaks[0]
        where = f" in {worst.module}" if worst.module else ""
        return (f"{worst.op} ({worst.node}){where} reaches {worst.max_abs:.4g} on the verification inputs, over "
                f"{self.limit:.4g} (fp16's largest value {FP16_MAX:g} with a {MARGIN:g}x margin): it would "
                "overflow in fp16; export fp32, or give --verify-data from the deployment's images to measure there")

    def summary(self) -> dict[str, Any]:
        """The compact form stored in artifact metadata."""
        return {"status": "passed" if self.passed else "failed", "max_abs": self.max_abs,
                "headroom": self.headroom, "limit": self.limit, "margin": MARGIN, "inputs": self.inputs,
                "worst": asdict(self.peaks[0]) if self.peaks else None}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "peaks": [asdict(p) for p in self.peaks], "passed": self.passed}


def computes_in_fp16(target: str, precision: str, int8_mode: str | None) -> bool:
    """Whether ``target``'s artifact at ``precision`` is an fp16 program (Core ML W8A8: ``full``)."""
    return precision == "fp16" or (precision == "int8" and target == "coreml" and int8_mode == "full")


def measure_range(program: Any, inputs: Sequence[np.ndarray], root: str = "") -> Fp16RangeReport:
    """Run ``program`` (a torch.export ExportedProgram) on ``inputs`` (in its input form)
    node by node and report the largest magnitude of each floating-point tensor; module
    paths are given relative to the submodule ``root`` (the model inside a wrapper)."""
    import torch  # torch: only an export measures (the report above is read on devices too)

    module = program.module()
    peaks: dict[str, TensorPeak] = {}
    for node in module.graph.nodes:
        if node.op == "get_attr":
            _note(peaks, node.name, "weight", _module_of(node, root), _attribute(module, node.target))
    interpreter = torch.fx.Interpreter(module)
    run_node = interpreter.run_node

    def noting(node: Any) -> Any:  # each call's floating-point outputs
        out = run_node(node)
        if node.op == "call_function":
            _note(peaks, node.name, _op_name(node.target), _module_of(node, root), out)
        return out

    interpreter.run_node = noting
    with torch.no_grad():
        for x in inputs:
            interpreter.run(torch.from_numpy(np.ascontiguousarray(x)))
    ranked = sorted(peaks.values(), key=lambda p: (-p.max_abs if math.isfinite(p.max_abs) else -math.inf))
    return Fp16RangeReport(inputs=len(inputs), peaks=ranked[:_SHOWN])


def _attribute(module: Any, target: str) -> Any:
    """The tensor a ``get_attr`` node reads (``a.b.c`` relative to ``module``)."""
    value = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _note(peaks: dict[str, TensorPeak], name: str, op: str, module: str, value: Any) -> None:
    """Raise ``peaks[name]`` to the largest magnitude among the float tensors in ``value``."""
    tensors = value if isinstance(value, (list, tuple)) else [value]
    for tensor in tensors:
        if not (hasattr(tensor, "is_floating_point") and tensor.is_floating_point() and tensor.numel()):
            continue
        magnitude = float(tensor.detach().abs().max())  # inf and NaN stay: they fail the check
        if math.isnan(magnitude):
            magnitude = math.inf
        peak = peaks.get(name)
        if peak is None:
            peaks[name] = TensorPeak(name, op, module, magnitude)
        elif magnitude > peak.max_abs:
            peak.max_abs = magnitude


def _op_name(target: Any) -> str:
    """``aten.conv2d.default`` for an aten op, the function's name otherwise."""
    text = str(target)
    return text if text.startswith("aten.") else getattr(target, "__name__", text)


def _module_of(node: Any, root: str) -> str:
    """The path of the innermost module a node came from, relative to ``root`` ("" at the top)."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    if not isinstance(path, str):
        return ""
    if root and (path == root or path.startswith(root + ".")):
        return path[len(root) + 1:]
    return path
