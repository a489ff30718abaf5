"""Run a split plan: scatter inputs to every sub-model, gather their features, fuse.

:class:`PlanSession` starts one worker per sub-model on a backend, ``local`` (threads of
this process, :mod:`.local`) or ``ray`` (actors on the plan's devices,
:mod:`.ray_backend`), and answers requests until it is closed. Requests made at the same
time from several threads are batched: while one batch is out, the requests that arrive
wait and then go out together as the next one (up to ``max_batch`` inputs), so each
sub-model is called once per batch instead of once per request. The fusion head runs
here, on the coordinator. Every request has a deadline; a sub-model that fails or does
not answer in time fails it with an error naming the sub-model, never a hang.
:func:`run_plan` is one session for one batch. Torch-free.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgevit.runtimes.loader import load as load_artifact

from ..apps.predict import softmax
from ..errors import DeadlineError, EdgeVitError, InputError
from .inputs import prepare_inputs
from .local import LocalBackend
from .plan import SplitPlan, load_plan
from .ray_backend import RayBackend
from .scatter import Deadline
from .worker import run_batch

BACKENDS = ("local", "ray")
__all__ = ["BACKENDS", "DeadlineError", "PlanSession", "Prediction", "RunResult", "run_plan"]


@dataclass
class Prediction:
    """One input's fused prediction: class index and name, and softmax scores."""

    index: int
    label: str
    score: float
    scores: list[float]


@dataclass
class RunResult:
    """Predictions, fused logits (N, classes) and where the time went (ms): ``queue``
    (waiting for the batch to go out), ``scatter``, ``compute``, ``gather`` (see
    :mod:`.scatter`), ``fuse`` and ``total``; ``batch`` is how many inputs went out with it;
    ``workers`` says where each sub-model really ran for this request (device, host, pid,
    node, runtime, worker_id), whether its worker was ``restarted`` since the previous
    answer, and how many ``restarts`` it has had in this session."""

    predictions: list[Prediction]
    logits: np.ndarray
    classes: list[str]
    timings_ms: dict[str, float] = field(default_factory=dict)
    batch: int = 0
    workers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"predictions": [p.__dict__ for p in self.predictions],
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
                "batch": self.batch, "workers": self.workers}


@dataclass
class _Request:
    inputs: np.ndarray
    deadline: Deadline
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: RunResult | None = None
    error: BaseException | None = None


class PlanSession:
    """A plan's workers on a backend, answering (batched) requests until closed."""

    def __init__(self, plan: SplitPlan | str | Path, backend: str = "local", *, address: str | None = None,
                 max_batch: int = 32, threads: int = 1, load: Callable[..., Any] | None = None,
                 startup_timeout_s: float = 120.0) -> None:
        """Start a worker per sub-model: ``address`` is a Ray cluster's (ray backend only),
        ``threads`` each runtime's, ``load`` what loads an artifact (default ``edgevit.load``)."""
        self.plan = plan if isinstance(plan, SplitPlan) else load_plan(plan)
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if address and backend != "ray":
            raise InputError("an address is for the ray backend; the local backend runs in this process")
        if max_batch < 1:
            raise InputError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self._shape = tuple(self.plan.input["shape"][1:])
        # a plan whose fusion is the identity (the unsplit model as a plan of one) has no head to run
        self.fusion = None if self.plan.fusion.get("identity") else \
            (load or load_artifact)(self.plan.artifact_path("fusion"), threads=threads)
        if backend == "ray":
            self.backend: Any = RayBackend(self.plan, address=address, load=load, threads=threads,
                                           startup_timeout_s=startup_timeout_s)
        else:
            self.backend = LocalBackend(self.plan, load=load, threads=threads)
        self._answered = [dict(w) for w in self.backend.placement]  # the worker that last answered, per sub-model
        self._restarts = [0] * len(self._answered)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True, name="edgevit-dispatch")
        self._dispatcher.start()

    @property
    def placement(self) -> list[dict[str, Any]]:
        """Where each sub-model's worker was started: device, host, pid, runtime, worker_id."""
        return self.backend.placement

    def _where(self, answered: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``answered`` (the workers of one batch) with restarts counted: a sub-model whose
        answer came from another worker than its previous answer was restarted meanwhile."""
        report = []
        for i, worker in enumerate(answered):
            restarted = worker.get("worker_id") != self._answered[i].get("worker_id")
            if restarted:
                self._restarts[i] += 1
                self._answered[i] = dict(worker)
            report.append({**worker, "restarted": restarted, "restarts": self._restarts[i]})
        return report

    def run(self, inputs: np.ndarray, deadline_s: float = 30.0) -> RunResult:
        """Fused predictions for ``inputs`` (N, C, H, W) float32, within ``deadline_s``."""
        self._check(inputs, deadline_s)
        request = _Request(inputs, Deadline.after(deadline_s))
        self._queue.put(request)
        # the backend enforces the deadline on a batch; this bounds the wait for one still queued
        if not request.done.wait(deadline_s + 1.0):
            raise DeadlineError(f"no answer within the {deadline_s:g} s deadline (queued behind earlier requests)")
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def round_trip_ms(self, inputs: np.ndarray, runs: int = 10, deadline_s: float = 30.0) -> float:
        """Median ms of ``runs`` probes: ``inputs`` sent to every sub-model's worker and an empty
        answer back, nothing computed (the transport and dispatch a request pays on this
        backend; :func:`edgevit.edvit.latency.predict_latency` takes it as ``round_trip_ms``).
        Call it with no requests in flight: probes bypass the request queue."""
        self._check(inputs, deadline_s)
        times = []
        for _ in range(max(1, runs)):
            start = time.perf_counter()
            self.backend.features(inputs, Deadline.after(deadline_s), probe=True)
            times.append((time.perf_counter() - start) * 1000)
        return float(np.median(times))

    def _check(self, inputs: np.ndarray, deadline_s: float) -> None:
        """One line (InputError) for a closed session, a bad deadline or inputs the plan cannot take."""
        if self._closed:
            raise EdgeVitError("this plan session is closed")
        if not deadline_s > 0:
            raise InputError(f"the deadline must be positive, got {deadline_s}")
        if not isinstance(inputs, np.ndarray) or inputs.ndim != 4 or inputs.shape[1:] != self._shape \
                or inputs.dtype != np.float32 or len(inputs) == 0:
            got = f"{inputs.dtype} {tuple(inputs.shape)}" if isinstance(inputs, np.ndarray) else type(inputs).__name__
            raise InputError(f"inputs must be float32 (N, {', '.join(map(str, self._shape))}) with N >= 1, got {got}")
        if not np.isfinite(inputs).all():
            raise InputError("inputs contain NaN or inf values")

    def _dispatch(self) -> None:
        """Send queued requests out in batches, one batch at a time, until closed."""
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, size = [first], len(first.inputs)
            while size < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
                size += len(more.inputs)
            self._serve(batch)

    def _serve(self, requests: list[_Request]) -> None:
        """One batch: every sub-model, then the fusion head; results back to each request."""
        live = []
        for request in requests:
            if request.deadline.remaining <= 0:
                request.error = DeadlineError(f"no answer within the {request.deadline.seconds:g} s deadline "
                                              "(queued behind earlier requests)")
                request.done.set()
            else:
                live.append(request)
        if not live:
            return
        try:
            out = time.monotonic()
            gathered = self.backend.features(np.concatenate([r.inputs for r in live]),
                                             min((r.deadline for r in live), key=lambda d: d.at))
            fuse_start = time.perf_counter()
            logits = self._fuse(gathered.features)
            fuse_ms = (time.perf_counter() - fuse_start) * 1000
            workers = self._where(gathered.workers)
        except BaseException as exc:
            for request in live:
                request.error = exc
                request.done.set()
            return
        start = 0
        for request in live:
            rows = logits[start:start + len(request.inputs)]
            start += len(request.inputs)
            timings = {"queue": (out - request.arrived) * 1000, **gathered.timings_ms, "fuse": fuse_ms}
            timings["total"] = (time.monotonic() - request.arrived) * 1000
            request.result = self._result(rows, timings, len(logits), workers)
            request.done.set()

    def _fuse(self, features: list[np.ndarray]) -> np.ndarray:
        """The fusion head on the concatenated features."""
        joined = np.concatenate(features, axis=1).astype(np.float32)
        return joined if self.fusion is None else run_batch(self.fusion, joined)

    def _result(self, logits: np.ndarray, timings: dict[str, float], batch: int,
                workers: list[dict[str, Any]]) -> RunResult:
        scores = softmax(logits.astype(np.float64))
        predictions = [Prediction(int(row.argmax()), self.plan.classes[int(row.argmax())], float(row.max()),
                                  [float(v) for v in row]) for row in scores]
        return RunResult(predictions, logits, list(self.plan.classes), timings, batch, workers)

    def close(self) -> None:
        """Stop the dispatcher and the backend's workers (Ray actors included)."""
        if self._closed:
            return
        self._closed = True
        while True:  # requests still queued fail now instead of at their deadline
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is not None:
                request.error = EdgeVitError("the plan session was closed before this request was sent")
                request.done.set()
        self._queue.put(None)
        self.backend.close()

    def __enter__(self) -> "PlanSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_plan(plan: SplitPlan | str | Path, inputs: Any, *, backend: str = "local",
             deadline_s: float = 30.0, **options: Any) -> RunResult:
    """Fused predictions of a split plan for ``inputs``, a batch (N, C, H, W) float32 or one
    or more image / .npy paths: a session started for this call and closed after it, on
    success or failure."""
    plan = plan if isinstance(plan, SplitPlan) else load_plan(plan)
    if not isinstance(inputs, np.ndarray):
        inputs = prepare_inputs(plan, [inputs] if isinstance(inputs, (str, Path)) else list(inputs))[0]
    with PlanSession(plan, backend, **options) as session:
        return session.run(inputs, deadline_s)
