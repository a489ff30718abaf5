"""The Ray backend: each sub-model is a Ray actor on the node of the device the plan gives it.

A device is a node that offers a custom resource named after it (``ray start ...
--resources='{"jetson": 1}'``); an actor asks for a sliver of that resource, so it lands
there and several sub-models can share a device. The actor is a :class:`SubModelWorker`:
it gets the artifact's bytes, checks them against the plan's SHA-256 on the node and
loads them with ``edgevit.load`` (each device its own runtime, no torch). Start-up fails
at once, naming the device, when the cluster has no node for a device of the plan.

Faults: actors are created with one restart and one task retry, so a worker killed
mid-request is restarted by Ray and the request retried once (requests are idempotent);
a second death fails the request with a WorkerError naming the sub-model. Requests have
deadlines (``ray.wait``); late tasks are cancelled. ``close`` kills every actor, and
shuts Ray down if this backend started it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ClusterError, EdgeVitError, WorkerError, first_line
from ..optional import require
from .fleet.cgroups import own_memory
from .plan import SplitPlan
from .scatter import Deadline, Gathered, gather
from .wire import pack, unpack
from .worker import Batch, SubModelWorker, WorkerSpec, named_error

DEVICE_SHARE = 0.001  # of a device's resource per sub-model: any number of sub-models fit
INLINE_BYTES = 8 * 1024 * 1024  # packed batches up to this size are sent inside each task (Ray's limit: 10 MB)


class NotLoaded(Exception):
    """A worker (restarted by Ray) was asked to run without the reference to its artifact."""


class RayWorker(SubModelWorker):
    """A :class:`SubModelWorker` whose artifact bytes stay in Ray's object store. Its
    constructor takes no object references (Ray cannot promise those to a restarted
    actor); instead the backend holds a reference to the bytes for the actor's life and
    gives it to ``start``, and again to a run that a worker with nothing loaded (restarted
    by Ray) refused with :class:`NotLoaded`: the worker then fetches and checks them on its
    node before it runs. Runs carry no reference otherwise (Ray tracks every reference an
    argument holds, which costs each task)."""

    def start(self, blob: list[Any] | None = None) -> dict[str, Any]:
        import ray

        if ray.get_runtime_context().was_current_actor_reconstructed:
            self._check_memory()
        if not self.spec.blob and blob:
            self.spec = dataclasses.replace(self.spec, blob=ray.get(blob[0]))
        return super().start()

    def _check_memory(self) -> None:
        """A restarted worker on a device with a memory limit whose kernel has killed a process
        for memory: its predecessor most likely died of it (Ray's workers are the first the
        kernel picks); loading again would only die again, so it fails with what happened."""
        memory = own_memory()
        if memory and memory["oom_kills"]:
            raise WorkerError(f"sub-model {self.spec.name} does not fit the memory of device {self.spec.device!r}: "
                              f"its worker was killed by the out-of-memory killer (the device's memory limit is "
                              f"{memory['limit'] / 1e6:.0f} MB; {memory['oom_kills']} kill(s) there so far)")

    def run(self, batch: np.ndarray, blob: list[Any] | None = None,  # type: ignore[override]
            probe: bool = False) -> Batch:
        if self.runtime is None and not probe:
            if not blob:
                raise NotLoaded(self.spec.name)
            self.start(blob)
        return super().run(batch, probe=probe)

    def run_packed(self, header: dict[str, Any], blob: list[Any] | None, *chunks: bytes) -> Batch:
        """:meth:`run` on a batch sent inside the task (see :mod:`.wire`); unpacking counts as scatter."""
        return self.run(unpack(header, chunks), blob, header.get("probe", False))


def _ray() -> Any:
    return require("ray", "for the ray backend")


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a cluster address (``ray.init`` would retry for minutes)."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        host, port = address.split("://")[-1], "6379"
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} "
                           "(is 'ray start --head' running there, and the port open?)") from None


class RayBackend:
    """Runs a plan's sub-models as Ray actors on their devices (see the module doc)."""

    def __init__(self, plan: SplitPlan, *, address: str | None = None, load: Callable[..., Any] | None = None,
                 threads: int = 1, restarts: int = 1, startup_timeout_s: float = 120.0) -> None:
        self.ray = ray = _ray()
        self.names = [s.name for s in plan.submodels]
        self.devices = [plan.assignment[n] for n in self.names]
        self.norm = (plan.input.get("mean"), plan.input.get("std"))
        self.restarts = restarts
        self.actors: list[Any] = []
        self.blobs: list[Any] = []  # each actor's artifact bytes, kept for its restarts
        self.started_ray = False
        try:
            self._connect(plan, address)
            self._check_devices(address)
            worker = ray.remote(RayWorker)
            for name, device in zip(self.names, self.devices):
                spec = WorkerSpec.from_plan(plan, name, threads)
                self.blobs.append(ray.put(spec.blob))
                options = dict(resources={device: DEVICE_SHARE}, num_cpus=0, max_concurrency=1,
                               max_restarts=restarts, max_task_retries=restarts,
                               enable_task_events=False)  # no per-task records for Ray's dashboard
                self.actors.append(worker.options(**options).remote(dataclasses.replace(spec, blob=b""), load))
            self.placement = self._start(startup_timeout_s)
        except BaseException:
            self.close()
            raise

    def _connect(self, plan: SplitPlan, address: str | None) -> None:
        """Use the Ray this process already joined (as is), else join the cluster at
        ``address`` (or RAY_ADDRESS), else start one on this machine that offers every
        device of the plan (a one-machine rehearsal)."""
        ray = self.ray
        if ray.is_initialized():
            return
        quiet = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
        address = address or os.environ.get("RAY_ADDRESS")
        if address and address != "auto":
            _check_reachable(address)
        try:
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(resources={d.name: 1 for d in plan.devices}, **quiet)
        except Exception as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise ClusterError(f"cannot start or join {where}: {first_line(exc)}") from None
        self.started_ray = True

    def _check_devices(self, address: str | None) -> None:
        """Every device that runs a sub-model must be a resource some live node offers."""
        offered = self.ray.cluster_resources()
        for device in dict.fromkeys(self.devices):
            if device not in offered:
                where = f" at {address}" if address else ""
                raise ClusterError(
                    f"device {device!r} is not in the Ray cluster{where}: no node offers the resource {device!r} "
                    f"(on that device run: ray start --address=<head>:6379 --resources='{{\"{device}\": 1}}')")

    def _start(self, timeout_s: float) -> list[dict[str, Any]]:
        """Each actor checks and loads its artifact; the first failure (or silence) is raised."""
        ray = self.ray
        refs = [actor.start.remote([blob]) for actor, blob in zip(self.actors, self.blobs)]
        index = {ref: i for i, ref in enumerate(refs)}
        deadline = time.monotonic() + timeout_s
        placement: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                late = ", ".join(f"{self.names[index[r]]} on {self.devices[index[r]]}" for r in pending)
                raise ClusterError(f"sub-model {late} did not start within {timeout_s:g} s "
                                   "(is the device's node up, with ray and the device's runtime installed?)")
            i = index[ready[0]]
            try:
                placement[i] = ray.get(ready[0])
            except Exception as exc:
                raise self._error(i, exc) from None
        return placement

    def features(self, batch: np.ndarray, deadline: Deadline, probe: bool = False) -> Gathered:
        """Every sub-model's features for ``batch``, computed on its device, within the deadline
        (a ``probe`` travels the same way and computes nothing: see :meth:`SubModelWorker.run`)."""
        ray = self.ray
        sent = time.time()
        # a batch travels inside each task, as pixels when exact (see .wire); a big one goes to the object store once
        header, chunks = pack(batch, *self.norm)
        header["probe"] = probe
        if sum(len(c) for c in chunks) <= INLINE_BYTES:
            def call(i: int, blob: list[Any] | None) -> Any:
                return self.actors[i].run_packed.remote(header, blob, *chunks)
        else:
            shared = ray.put(batch)

            def call(i: int, blob: list[Any] | None) -> Any:
                return self.actors[i].run.remote(shared, blob, probe)
        refs = [call(i, None) for i in range(len(self.actors))]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        resent: set[int] = set()

        def next_done(timeout: float):
            nonlocal pending
            ready, pending = ray.wait(pending, num_returns=1, timeout=timeout)
            if not ready:
                return None
            i = index[ready[0]]
            try:
                return i, ray.get(ready[0])
            except Exception as exc:
                if i not in resent and isinstance(getattr(exc, "cause", None), NotLoaded):
                    resent.add(i)  # restarted by Ray: send the run again, with its artifact's reference
                    refs[i] = call(i, [self.blobs[i]])
                    index[refs[i]] = i
                    pending.append(refs[i])
                    return None
                return i, self._error(i, exc)

        def abandon(late: Sequence[int]) -> None:
            for i in late:
                try:
                    ray.cancel(refs[i])
                except Exception:  # already finished or not cancellable: it is ignored
                    pass

        return gather(self.names, next_done, sent, deadline, abandon)

    def _error(self, i: int, exc: BaseException) -> EdgeVitError:
        """A Ray failure of sub-model ``i`` as one edgevit error naming it and its device."""
        exceptions = self.ray.exceptions
        name, device = self.names[i], self.devices[i]
        if isinstance(exc, exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
            exc = exc.cause  # what the worker raised (PlanError, InputError, a runtime's error)
        if isinstance(exc, EdgeVitError):
            return named_error(name, exc)
        if isinstance(exc, exceptions.RayActorError):
            return WorkerError(f"sub-model {name}: its worker on device {device!r} died and did not come back "
                               f"after {self.restarts} restart(s) (the request was retried {self.restarts} time(s))")
        return WorkerError(f"sub-model {name} on device {device!r} failed: {type(exc).__name__}: {first_line(exc)}")

    def close(self) -> None:
        """Kill every actor; shut Ray down if this backend started it."""
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already dead
                pass
        self.actors, self.blobs = [], []
        if self.started_ray and self.ray.is_initialized():
            self.ray.shutdown()
            self.started_ray = False
