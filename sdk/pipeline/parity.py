"""Parity: does an artifact compute what the PyTorch model computes?

The artifact runs on the verification inputs (:mod:`edgevit.pipeline.checks`: seeded
random tensors, photos, the user's data, an image) next to the eval-mode PyTorch model;
the report gives max/mean absolute error, where the worst element is, and top-1
agreement, per input and per kind of input, judged against the tolerance table below
(DESIGN section 7).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

# precision -> (atol, rtol): pass when |got - ref| <= atol + rtol * |ref| everywhere
TOLERANCES: dict[str, tuple[float, float]] = {"fp32": (1e-4, 1e-3), "fp16": (5e-2, 1e-3)}


@dataclass
class ParityRow:
    """The comparison on one input."""

    input: str
    max_abs_err: float
    mean_abs_err: float
    worst_index: list[int]
    worst_ref: float
    worst_got: float
    top1_ref: int
    top1_got: int
    passed: bool
    kind: str = "random"  # edgevit.pipeline.checks.KINDS


@dataclass
class ParityReport:
    """Per-input comparison of an artifact against PyTorch, and the verdict."""

    artifact: str
    backend: str
    precision: str
    atol: float
    rtol: float
    numerically_verified: bool = True
    rows: list[ParityRow] = field(default_factory=list)
    structural: dict[str, Any] | None = None
    note: str = ""
    verdict: bool | None = None  # set when another check judges (int8: the accuracy guard); rows inform
    sources: dict[str, str] = field(default_factory=dict)  # kind -> what its inputs are

    @property
    def passed(self) -> bool:
        if self.verdict is not None:
            return self.verdict
        if not self.numerically_verified:
            return bool(self.structural and self.structural.get("ok"))
        return bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def max_abs_err(self) -> float | None:
        return max((r.max_abs_err for r in self.rows), default=None)

    @property
    def top1_agreement(self) -> float | None:
        if not self.rows:
            return None
        return sum(r.top1_ref == r.top1_got for r in self.rows) / len(self.rows)

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Per kind of input: its source, how many, the largest error, top-1 agreement, verdict."""
        kinds: dict[str, dict[str, Any]] = {}
        for kind in dict.fromkeys(r.kind for r in self.rows):
            rows = [r for r in self.rows if r.kind == kind]
            kinds[kind] = {"source": self.sources.get(kind, ""), "inputs": len(rows),
                           "max_abs_err": max(r.max_abs_err for r in rows),
                           "top1_agreement": sum(r.top1_ref == r.top1_got for r in rows) / len(rows),
                           "passed": all(r.passed for r in rows)}
        return kinds

    def summary(self) -> dict[str, Any]:
        """The compact form stored in artifact metadata."""
        return {
            "status": "passed" if self.passed else "failed",
            "numerically_verified": self.numerically_verified,
            "backend": self.backend,
            "inputs": len(self.rows),
            "max_abs_err": self.max_abs_err,
            "mean_abs_err": float(np.mean([r.mean_abs_err for r in self.rows])) if self.rows else None,
            "top1_agreement": self.top1_agreement,
            "atol": self.atol,
            "rtol": self.rtol,
            "by_kind": self.by_kind(),
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(passed=self.passed, max_abs_err=self.max_abs_err, top1_agreement=self.top1_agreement,
                    by_kind=self.by_kind())
        return data


def compare(name: str, ref: np.ndarray, got: np.ndarray, atol: float, rtol: float, kind: str = "random"
            ) -> ParityRow:
    """Compare one output pair; NaNs in ``got`` fail."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64).reshape(ref.shape)
    err = np.abs(got - ref)
    err = np.where(np.isnan(err), np.inf, err)
    worst = np.unravel_index(int(np.argmax(err)), err.shape)
    passed = bool(np.all(err <= atol + rtol * np.abs(ref)))
    return ParityRow(
        input=name,
        max_abs_err=float(err.max()),
        mean_abs_err=float(err.mean()),
        worst_index=[int(i) for i in worst],
        worst_ref=float(ref[worst]),
        worst_got=float(got[worst]),
        top1_ref=int(ref.reshape(ref.shape[0], -1)[0].argmax()),
        top1_got=int(np.nan_to_num(got, nan=-np.inf).reshape(got.shape[0], -1)[0].argmax()),
        passed=passed,
        kind=kind,
    )


def parity_inputs(shape: tuple[int, ...], count: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``count`` fixed N(0, 1) inputs (normalized-image statistics), seeded."""
    rng = np.random.default_rng(seed)
    return [(f"random#{i} (seed {seed})", rng.standard_normal(shape).astype(np.float32)) for i in range(count)]


def check_parity(runtime, reference: Callable[[np.ndarray], np.ndarray], probes: Sequence[Any], precision: str,
                 sources: dict[str, str] | None = None) -> ParityReport:
    """Run ``runtime`` and ``reference`` on every probe (:class:`edgevit.pipeline.checks.Probe`,
    in the artifact's input form) and compare."""
    atol, rtol = TOLERANCES.get(precision, TOLERANCES["fp32"])
    report = ParityReport(str(runtime.path), runtime.describe(), precision, atol, rtol, sources=dict(sources or {}))
    for probe in probes:
        report.rows.append(compare(probe.name, reference(probe.x), runtime.run(probe.x), atol, rtol, probe.kind))
    return report


def structural_report(runtime, expected_shape: tuple[int, ...], precision: str) -> ParityReport:
    """What can be checked without running: it loads, names and shapes fit, ops are listed."""
    atol, rtol = TOLERANCES.get(precision, TOLERANCES["fp32"])
    census = runtime.op_census()
    inp = runtime.inputs[0]
    problems = []
    if len(runtime.inputs) != 1:
        problems.append(f"{len(runtime.inputs)} inputs, expected 1")
    if tuple(inp.shape) != tuple(expected_shape):
        problems.append(f"input shape {inp.shape}, expected {tuple(expected_shape)}")
    if not census:
        problems.append("the program holds no operations")
    structural = {
        "ok": not problems,
        "problems": problems,
        "inputs": [i.describe() for i in runtime.inputs],
        "outputs": [o.describe() for o in runtime.outputs],
        "op_census": census,
    }
    why = runtime.cannot_run_reason or "it cannot be run here"
    note = (
        f"not numerically verified: {why}; the package was checked "
        "structurally (spec loads, weights whole, input/output names and shapes, op census)"
    )
    return ParityReport(str(runtime.path), runtime.describe(), precision, atol, rtol,
                        numerically_verified=False, structural=structural, note=note)
