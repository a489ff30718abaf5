"""The fold report: what re-parameterization folded, and what it kept and why.

Fold functions call :func:`record` with a name relative to the module being folded; the
engine sets that module's path (:func:`at`) and the active report (:func:`collecting`),
so a module's ``reparameterize()`` needs no extra arguments to be reported.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

_REPORT: contextvars.ContextVar[Optional["FoldReport"]] = contextvars.ContextVar("edgevit_fold_report", default=None)
_PREFIX: contextvars.ContextVar[str] = contextvars.ContextVar("edgevit_fold_prefix", default="")


@dataclass(frozen=True)
class FoldEntry:
    """One decision: ``action`` is "folded" or "kept"; ``where`` is the module path."""

    action: str
    where: str
    detail: str


@dataclass
class FoldReport:
    """Every fold applied to a model and every structure left in place, with reasons."""

    model: str = ""
    entries: list[FoldEntry] = field(default_factory=list)
    max_abs_change: Optional[float] = None  # folded vs unfolded output, when checked

    @property
    def folded(self) -> list[FoldEntry]:
        return [e for e in self.entries if e.action == "folded"]

    @property
    def kept(self) -> list[FoldEntry]:
        return [e for e in self.entries if e.action == "kept"]

    def counts(self) -> dict[str, int]:
        """Folds by kind ("BatchNorm2d -> previous Conv2d": 12, ...)."""
        counts: dict[str, int] = {}
        for entry in self.folded:
            kind = entry.detail.split(" (")[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def to_dict(self, entries: bool = True) -> dict:
        data = {
            "model": self.model,
            "folded": len(self.folded),
            "kept": len(self.kept),
            "fold_counts": self.counts(),
            "max_abs_change": self.max_abs_change,
        }
        if entries:
            data["entries"] = [asdict(e) for e in self.entries]
        return data

    def summary(self) -> str:
        """One line: how many folds, how many structures kept."""
        return f"{len(self.folded)} folds, {len(self.kept)} kept"


def record(action: str, name: str, detail: str) -> None:
    """Add an entry to the active report (a no-op outside :func:`collecting`)."""
    report = _REPORT.get()
    if report is None:
        return
    prefix = _PREFIX.get()
    where = f"{prefix}.{name}" if prefix and name else (prefix or name or "<model>")
    report.entries.append(FoldEntry(action, where, detail))


@contextlib.contextmanager
def collecting(report: FoldReport) -> Iterator[FoldReport]:
    """Make ``report`` the one that :func:`record` writes to."""
    token = _REPORT.set(report)
    try:
        yield report
    finally:
        _REPORT.reset(token)


def current_path() -> str:
    """The path of the module whose names :func:`record` is taking now ("" at the top)."""
    return _PREFIX.get()


@contextlib.contextmanager
def at(path: str) -> Iterator[None]:
    """Record names relative to the module at ``path``."""
    token = _PREFIX.set(path)
    try:
        yield
    finally:
        _PREFIX.reset(token)
