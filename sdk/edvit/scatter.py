"""Gather every sub-model's answer to one scattered batch, within a deadline.

Both backends send a batch to all sub-models at once and then call :func:`gather`, which
takes answers as they come: the first failure fails the request at once, naming its
sub-model; sub-models still silent at the deadline fail it with a DeadlineError that
names them (they are abandoned, never waited for). It also splits the request's time
along its critical path, the sub-model that answered last: ``scatter`` (sent until it
started), ``compute`` (its run), ``gather`` (its end until every answer was in hand).
Those times come from ``time.time()`` on both sides, so across real devices they carry
the clock skew between them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DeadlineError
from .worker import Batch, named_error

# next_done(timeout_s) -> (sub-model index, its Batch or the exception it raised), or None
NextDone = Callable[[float], "tuple[int, Batch | BaseException] | None"]


@dataclass(frozen=True)
class Deadline:
    """When a request must be answered (``time.monotonic()``) and the seconds it was given."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds, seconds)

    @property
    def remaining(self) -> float:
        return self.at - time.monotonic()


@dataclass
class Gathered:
    """Every sub-model's features (plan order), the request's time split (ms), and the
    worker that computed each (plan order)."""

    features: list[np.ndarray]
    timings_ms: dict[str, float]
    workers: list[dict[str, Any]]


def gather(names: Sequence[str], next_done: NextDone, sent: float, deadline: Deadline,
           abandon: Callable[[Sequence[int]], None]) -> Gathered:
    """Collect one answer per sub-model (see the module doc); ``abandon(late)`` is told
    which sub-models are no longer waited for before the error is raised."""
    answers: list[Batch | None] = [None] * len(names)
    waiting = set(range(len(names)))
    while waiting and (remaining := deadline.remaining) > 0:
        done = next_done(remaining)
        if done is None:
            continue
        index, answer = done
        if isinstance(answer, BaseException):
            abandon(sorted(waiting - {index}))
            raise named_error(names[index], answer)
        answers[index] = answer
        waiting.discard(index)
    if waiting:
        late = sorted(waiting)
        abandon(late)
        raise DeadlineError(f"no answer from sub-model {', '.join(names[i] for i in late)} "
                            f"within the {deadline.seconds:g} s deadline")
    received = time.time()
    last = max(answers, key=lambda b: b.ended)
    timings = {"scatter": last.started - sent, "compute": last.ended - last.started, "gather": received - last.ended}
    return Gathered([b.features for b in answers], {k: max(v, 0.0) * 1000 for k, v in timings.items()},
                    [b.worker for b in answers])
