"""The local backend: every sub-model's worker in this process, each on its own thread.

A request starts one daemon thread per sub-model, so the sub-models compute in parallel
and one that never answers can delay neither the caller past its deadline nor the
process's exit. A worker whose run fails (its runtime raised: the in-process form of a
worker dying) is restarted from its spec, which loads and checks the artifact again, and
the request is retried on it once; a second failure fails the request naming the
sub-model. Bad inputs are not retried.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import numpy as np

from ..errors import DeadlineError, EdgeVitError, InputError
from .plan import SplitPlan
from .scatter import Deadline, Gathered, gather
from .worker import Batch, SubModelWorker, WorkerSpec, named_error


FINAL = (InputError, DeadlineError)  # failures a restart cannot mend: not retried


class LocalBackend:
    """Runs a plan's sub-models in this process (see the module doc)."""

    def __init__(self, plan: SplitPlan, *, load: Callable[..., Any] | None = None, threads: int = 1) -> None:
        self.names = [s.name for s in plan.submodels]
        self._load = load
        self.specs = [WorkerSpec.from_plan(plan, n, threads) for n in self.names]
        self.workers = [SubModelWorker(spec, load) for spec in self.specs]
        self.restarts = [0] * len(self.names)
        self.busy = [threading.Lock() for _ in self.names]  # one request at a time per runtime
        self.closed = False
        self.placement = [w.start() for w in self.workers]

    def features(self, batch: np.ndarray, deadline: Deadline, probe: bool = False) -> Gathered:
        """Every sub-model's features for ``batch``, computed in parallel, within the deadline
        (a ``probe`` computes nothing: see :meth:`SubModelWorker.run`)."""
        answers: queue.Queue = queue.Queue()
        abandoned = threading.Event()
        sent = time.time()
        for i, name in enumerate(self.names):
            threading.Thread(target=self._answer, args=(i, batch, abandoned, answers, probe), daemon=True,
                             name=f"edgevit-{name}").start()

        def next_done(timeout: float):
            try:
                return answers.get(timeout=timeout)
            except queue.Empty:
                return None

        return gather(self.names, next_done, sent, deadline, lambda late: abandoned.set())

    def _answer(self, i: int, batch: np.ndarray, abandoned: threading.Event, answers: queue.Queue,
                probe: bool) -> None:
        """Run sub-model ``i`` on ``batch``, restarting its worker and retrying once on failure."""
        with self.busy[i]:
            if self.closed:
                answers.put((i, EdgeVitError("the plan session was closed")))
            elif not abandoned.is_set():
                answers.put((i, self._run(i, batch, abandoned, probe)))

    def _run(self, i: int, batch: np.ndarray, abandoned: threading.Event, probe: bool) -> Batch | BaseException:
        first = self._attempt(i, batch, abandoned, probe)
        if not isinstance(first, Exception) or isinstance(first, FINAL) or abandoned.is_set():
            return first
        self.workers[i] = SubModelWorker(self.specs[i], self._load)  # the worker died: restart, retry once
        self.restarts[i] += 1
        second = self._attempt(i, batch, abandoned, probe)
        if not isinstance(second, Exception) or isinstance(second, FINAL):
            return second
        error = named_error(self.names[i], second, retried=True)
        error.__cause__ = first
        return error

    def _attempt(self, i: int, batch: np.ndarray, abandoned: threading.Event, probe: bool) -> Batch | Exception:
        try:
            return self.workers[i].run(batch, abandoned.is_set, probe)
        except Exception as exc:  # handed to the caller, by sub-model name
            return exc

    def close(self) -> None:
        """Take no more work; a batch still running finishes (its threads end with the process)."""
        self.closed = True

