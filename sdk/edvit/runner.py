"""Run a split plan: scatter inputs to every sub-model, gather features, fuse.

The local backend runs every sub-model in this process, each on its own thread with its
own runtime (the artifact for its device's target), so that sub-models compute in
parallel; a request that is not answered by its deadline fails with an error naming the
sub-models that did not answer (it never hangs). Torch-free.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import EdgeVitError, InputError, rebuild_error
from ..predict import softmax
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


class LocalBackend:
    """Every sub-model in this process, each with its own runtime (the artifact for its
    device's target). A request runs each sub-model on a daemon thread, so one that never
    answers can delay neither the caller past its deadline nor the process's exit."""

    def __init__(self, plan: SplitPlan, *, load: Callable[..., Any] | None = None, threads: int = 1) -> None:
        if load is None:
            from edgevit.runtimes.loader import load
        device_target = {d.name: d.target for d in plan.devices}
        self.names = [s.name for s in plan.submodels]
        self.runtimes = [load(plan.artifact_path(n, device_target[plan.assignment[n]]), threads=threads)
                         for n in self.names]
        self.fusion = load(plan.artifact_path("fusion"), threads=threads)

    def features(self, batch: np.ndarray, deadline_s: float) -> list[np.ndarray]:
        """Each sub-model's features for ``batch`` (plan order), computed in parallel."""
        results: list[Any] = [None] * len(self.names)
        failures: list[BaseException | None] = [None] * len(self.names)
        failed = threading.Event()
        cancelled = threading.Event()

        def compute(i: int) -> None:
            try:
                rows = []
                for sample in batch:
                    if cancelled.is_set():
                        return
                    rows.append(self.runtimes[i].run(sample[None]))
                results[i] = np.concatenate(rows)
            except BaseException as exc:  # reported to the caller, by sub-model name
                failures[i] = exc
                failed.set()

        workers = [threading.Thread(target=compute, args=(i,), daemon=True, name=f"edgevit-{n}")
                   for i, n in enumerate(self.names)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + deadline_s
        for worker in workers:
            while worker.is_alive() and not failed.is_set() and time.monotonic() < deadline:
                worker.join(min(0.05, max(0.0, deadline - time.monotonic())))
        cancelled.set()
        for name, error in zip(self.names, failures):
            if isinstance(error, EdgeVitError):  # same class (and exit code), named
                raise rebuild_error(type(error).__name__, f"sub-model {name}: {error}") from error
            if error is not None:
                raise EdgeVitError(f"sub-model {name} failed: {type(error).__name__}: {error}") from error
        late = [n for n, worker in zip(self.names, workers) if worker.is_alive()]
        if late:
            raise DeadlineError(f"no answer from sub-model {', '.join(late)} within the {deadline_s:g} s deadline")
        return results

    def fuse(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """The fusion head on the concatenated features, one input at a time."""
        joined = np.concatenate(features, axis=1).astype(np.float32)
        return np.concatenate([self.fusion.run(row[None]) for row in joined])


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
    started = time.perf_counter()
    features = runner.features(inputs, deadline_s)
    computed = time.perf_counter()
    logits = runner.fuse(features)
    fused = time.perf_counter()
    scores = softmax(logits.astype(np.float64))
    predictions = [Prediction(int(row.argmax()), plan.classes[int(row.argmax())], float(row.max()),
                              [float(v) for v in row]) for row in scores]
    return RunResult(predictions, logits, list(plan.classes),
                     {"submodels": (computed - started) * 1000, "fuse": (fused - computed) * 1000})
