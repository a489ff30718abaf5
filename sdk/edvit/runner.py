"""Run a split plan: scatter inputs to every sub-model, gather features, fuse.

The local backend runs every sub-model in this process, each on its own worker thread
with its own runtime (the artifact for its device's target), so that sub-models compute
in parallel; a request that is not answered by its deadline fails with an error naming
the sub-models that did not answer (it never hangs). Torch-free.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import EdgeVitError, InputError
from .plan import SplitPlan, load_plan


class DeadlineError(EdgeVitError):
    """A sub-model did not answer before the request's deadline."""

    exit_code = 1


@dataclass
class Prediction:
    """One input's fused prediction: class index and name, and softmax scores."""

    index: int
    label: str
    score: float
    scores: list[float]


@dataclass
class RunResult:
    """Predictions, fused logits (N, classes) and where the time went (ms)."""

    predictions: list[Prediction]
    logits: np.ndarray
    classes: list[str]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"predictions": [p.__dict__ for p in self.predictions],
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()}}


def _target_of(plan: SplitPlan, name: str) -> str:
    device = next(d for d in plan.devices if d.name == plan.assignment[name])
    entry = next(s for s in plan.submodels if s.name == name)
    return device.target if device.target in entry.artifacts else "onnx"


class LocalBackend:
    """Every sub-model in this process: one runtime and one worker thread each."""

    def __init__(self, plan: SplitPlan, *, load: Callable[..., Any] | None = None, threads: int = 1) -> None:
        if load is None:
            from edgevit.runtimes.loader import load
        self.plan = plan
        self.names = [s.name for s in plan.submodels]
        self.runtimes = {n: load(plan.artifact_path(n, _target_of(plan, n)), threads=threads) for n in self.names}
        self.fusion = load(plan.artifact_path("fusion"), threads=threads)
        self.pool = ThreadPoolExecutor(max_workers=len(self.names), thread_name_prefix="edgevit-submodel")

    def features(self, batch: np.ndarray, deadline_s: float) -> list[np.ndarray]:
        """Each sub-model's features for ``batch`` (plan order), computed in parallel."""

        def compute(name: str) -> np.ndarray:
            runtime = self.runtimes[name]
            return np.concatenate([runtime.run(sample[None]) for sample in batch])

        futures = {self.pool.submit(compute, n): n for n in self.names}
        done, pending = wait(futures, timeout=deadline_s, return_when=FIRST_EXCEPTION)
        for future in done:
            if future.exception() is not None:
                for other in pending:
                    other.cancel()
                error = future.exception()
                raise type(error)(f"sub-model {futures[future]}: {error}") if isinstance(error, EdgeVitError) \
                    else EdgeVitError(f"sub-model {futures[future]} failed: {type(error).__name__}: {error}")
        if pending:
            for future in pending:
                future.cancel()
            late = ", ".join(sorted(futures[f] for f in pending))
            raise DeadlineError(f"no answer from sub-model {late} within the {deadline_s:g} s deadline")
        return [next(f.result() for f, n in futures.items() if n == name) for name in self.names]

    def fuse(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """The fusion head on the concatenated features, one input at a time."""
        joined = np.concatenate(features, axis=1).astype(np.float32)
        return np.concatenate([self.fusion.run(row[None]) for row in joined])

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def run_plan(plan: SplitPlan | str | Path, inputs: np.ndarray, *, backend: str = "local",
             deadline_s: float = 30.0, **options: Any) -> RunResult:
    """Fused predictions of a split plan for a batch ``inputs`` (N, C, H, W) float32."""
    if not isinstance(plan, SplitPlan):
        plan = load_plan(plan)
    if backend != "local":
        raise InputError(f"unknown backend {backend!r}: this edgevit runs plans on the local backend")
    if not deadline_s > 0:
        raise InputError(f"the deadline must be positive, got {deadline_s}")
    expected = tuple(plan.input["shape"][1:])
    if inputs.ndim != 4 or inputs.shape[1:] != expected or inputs.dtype != np.float32:
        raise InputError(f"inputs must be float32 (N, {', '.join(map(str, expected))}), got "
                         f"{inputs.dtype} {tuple(inputs.shape)}")
    runner = LocalBackend(plan, **options)
    try:
        started = time.perf_counter()
        features = runner.features(inputs, deadline_s)
        computed = time.perf_counter()
        logits = runner.fuse(features)
        fused = time.perf_counter()
    finally:
        runner.close()
    scores = _softmax(logits.astype(np.float64))
    predictions = [Prediction(int(row.argmax()), plan.classes[int(row.argmax())], float(row.max()),
                              [float(v) for v in row]) for row in scores]
    return RunResult(predictions, logits, list(plan.classes),
                     {"submodels": (computed - started) * 1000, "fuse": (fused - computed) * 1000})
