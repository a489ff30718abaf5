"""Runtimes with injected faults for the plan-run tests (pickled by value into Ray workers)."""

from __future__ import annotations

import os
import time
from pathlib import Path


class Faulty:
    """Wraps a runtime: marks each run in ``marks`` (``<pid>.running``), sleeps ``delay``
    seconds, then fails as its loader says or answers."""

    def __init__(self, inner, loader):
        self.inner, self.loader = inner, loader

    def run(self, x):
        if self.loader.marks:
            (Path(self.loader.marks) / f"{os.getpid()}.running").touch()
        time.sleep(self.loader.delay)
        if self.loader.fail == "always" or (self.loader.fail == "once" and self.loader.failures == 0):
            self.loader.failures += 1
            raise RuntimeError("device lost")
        return self.inner.run(x)


class FaultyLoader:
    """``edgevit.load``, with sub-model ``target``'s runtime wrapped in :class:`Faulty`."""

    def __init__(self, target="sub1", delay=0.0, fail="never", marks=None):
        self.target, self.delay, self.fail, self.marks = target, delay, fail, marks
        self.failures = 0
        self.loads = 0

    def __call__(self, path, threads=None):
        import edgevit

        runtime = edgevit.load(path, threads=threads)
        if Path(path).stem != self.target:
            return runtime
        self.loads += 1
        return Faulty(runtime, self)
