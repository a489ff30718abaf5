"""One sub-model's worker: checks its artifact against the plan, loads it, runs batches.

The same class runs on a thread of this process (local backend) and as a Ray actor on a
device (ray backend). It is given the artifact's bytes, so devices need no shared files,
and it refuses bytes whose SHA-256 is not the plan's before it loads anything. Its
constructor never fails: a worker restarted after a crash is built again from the same
spec and loads on first use. Torch-free: this is what runs on the devices.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgevit.runtimes.loader import load as load_artifact

from ..errors import ArtifactError, DeadlineError, EdgeVitError, WorkerError, first_line, with_message
from .plan import PlanError, SplitPlan


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs: the sub-model's name and device, its artifact (bytes) and checksum."""

    name: str
    device: str
    filename: str
    sha256: str
    blob: bytes
    threads: int = 1

    @classmethod
    def from_plan(cls, plan: SplitPlan, name: str, threads: int = 1) -> "WorkerSpec":
        """The spec of sub-model ``name``: the artifact for its device's target, read from disk."""
        device = plan.assignment[name]
        target = next(d.target for d in plan.devices if d.name == device)
        entry = next(s for s in plan.submodels if s.name == name)
        path = plan.artifact_path(name, target)
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"cannot read {path}: {first_line(exc)}") from None
        return cls(name, device, path.name, entry.artifacts[target].sha256, blob, threads)


@dataclass
class Batch:
    """A worker's answer: features (N, D), when it started and ended (``time.time()``), and
    which worker computed it (its :meth:`SubModelWorker.start` record: device, host, pid, ...)."""

    features: np.ndarray
    started: float
    ended: float
    worker: dict[str, Any] = field(default_factory=dict)


class SubModelWorker:
    """Verifies, loads and runs one sub-model's artifact (see the module doc)."""

    def __init__(self, spec: WorkerSpec, load: Callable[..., Any] | None = None) -> None:
        self.spec = spec
        self._load = load
        self.runtime: Any = None
        self.where: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        """Check the artifact's SHA-256, load it with its runtime; say where and how it runs
        (``worker_id`` is new at every start: a restarted worker has another one)."""
        spec = self.spec
        digest = hashlib.sha256(spec.blob).hexdigest()
        if digest != spec.sha256:
            raise PlanError(f"sub-model {spec.name}: artifact {spec.filename} does not match the plan "
                            f"(SHA-256 {digest[:16]}..., the plan says {spec.sha256[:16]}...); copy the plan again")
        load = self._load or load_artifact
        with tempfile.TemporaryDirectory(prefix="edgevit-worker-") as scratch:
            path = Path(scratch) / spec.filename  # the runtimes read it whole while loading
            path.write_bytes(spec.blob)
            self.runtime = load(path, threads=spec.threads)
            runtime = self.runtime.describe() if hasattr(self.runtime, "describe") else type(self.runtime).__name__
        ray = sys.modules.get("ray")  # inside a Ray actor: the node it was placed on
        node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None
        self.where = {"submodel": spec.name, "device": spec.device, "host": socket.gethostname(), "pid": os.getpid(),
                      "node": node, "runtime": runtime, "python": sys.executable,
                      "torch_loaded": "torch" in sys.modules, "worker_id": uuid.uuid4().hex[:12]}
        return dict(self.where)

    def run(self, batch: np.ndarray, stop: Callable[[], bool] = lambda: False, probe: bool = False) -> Batch:
        """Features of ``batch`` (N, C, H, W): one runtime call per sample, unless the artifact
        takes any batch size; ``stop()`` abandons the batch between samples. A ``probe`` runs
        nothing and answers (N, 0) features: the round trip without the compute."""
        if probe:
            now = time.time()
            return Batch(np.zeros((len(batch), 0), np.float32), now, now, dict(self.where))
        if self.runtime is None:
            self.start()
        started = time.time()
        features = run_batch(self.runtime, batch, stop, f"sub-model {self.spec.name}")
        return Batch(features, started, time.time(), dict(self.where))


def run_batch(runtime: Any, batch: np.ndarray, stop: Callable[[], bool] = lambda: False,
              name: str = "") -> np.ndarray:
    """``runtime`` on a batch (float32 out): in one call when the artifact takes any batch
    size, else one sample at a time; ``stop()`` abandons it between samples."""
    dims = getattr(runtime, "inputs", None)
    if dims and dims[0].shape and dims[0].shape[0] is None:
        return np.asarray(runtime.run(batch), dtype=np.float32)
    rows = []
    for sample in batch:
        if stop():
            raise DeadlineError(f"{name}: abandoned at the deadline")
        rows.append(runtime.run(sample[None]))
    return np.concatenate(rows).astype(np.float32, copy=False)


def named_error(name: str, error: BaseException, retried: bool = False) -> EdgeVitError:
    """``error`` from sub-model ``name`` as one edgevit error that names it: the same class
    for edgevit errors (so exit codes survive), a WorkerError for anything else."""
    if isinstance(error, EdgeVitError):
        named = str(error).startswith(f"sub-model {name}")
        return error if named else with_message(type(error), f"sub-model {name}: {error}")
    again = " again after a restart (the request was retried once)" if retried else ""
    return WorkerError(f"sub-model {name} failed{again}: {type(error).__name__}: {first_line(error)}")
