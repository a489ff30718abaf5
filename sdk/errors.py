"""One error hierarchy for edgevit.

Every error a user can cause is an :class:`EdgeVitError` subclass whose message is a
single line saying what went wrong, where, and what to do. ``exit_code`` is what the CLI
returns: 2 for bad input or usage, 1 for a check that ran and failed.
"""

from __future__ import annotations

import re


class EdgeVitError(Exception):
    """Base class of every error edgevit raises on purpose."""

    exit_code: int = 2


class UnsupportedModelError(EdgeVitError):
    """Unknown model name, or a checkpoint that does not fit the model."""


class ArtifactError(EdgeVitError):
    """A missing, truncated, corrupt or unrecognised artifact file."""


class InputError(EdgeVitError):
    """An input tensor or image of the wrong shape, dtype or values (NaN, inf)."""


class OutputPathError(EdgeVitError):
    """An output location that cannot be created or written."""


class MissingDependencyError(EdgeVitError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str | None, purpose: str = "") -> None:
        """``extra`` None: a package no extra brings (``purpose`` then says how to get it)."""
        self.package = package
        self.extra = extra
        what = f" (needed {purpose})" if purpose else ""
        hint = f": {install_hint(extra)}" if extra else ""
        super().__init__(f"{package} is not installed{what}{hint}")


# extras whose packages need torch, which must be installed first as torch==2.13.0 (README)
_TORCH_EXTRAS = ("export", "split")


def install_hint(extra: str) -> str:
    """How to install one of edgevit's extras (edgevit is installed from its repository or a wheel)."""
    torch_first = "pip install torch==2.13.0 && " if extra in _TORCH_EXTRAS else ""
    return (f"run  {torch_first}pip install \".[{extra}]\"  in the edgevit checkout "
            f"(or the wheel: edgevit-*.whl[{extra}])")


class ExportError(EdgeVitError):
    """A converter failed on a valid model (unsupported op, converter bug)."""

    exit_code = 1


class ParityError(EdgeVitError):
    """The artifact does not compute what the PyTorch model computes."""

    exit_code = 1

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # terminal colour codes (onnxruntime's log lines carry them)


def printable(text: str) -> str:
    """``text`` with every character that is not printable (control characters, line and
    paragraph separators) written as an escape, so it stays on one line and cannot steer
    a terminal: messages quote names that come from untrusted artifacts."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name if empty), for one-line
    errors: colour codes removed, other control characters escaped, at most ``limit`` long."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return printable(_ANSI.sub("", line))[:limit]


def with_message(cls: type[EdgeVitError], message: str) -> EdgeVitError:
    """An instance of ``cls`` carrying ``message`` as is (past constructors that compose their own)."""
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


def rebuild_error(class_name: str, message: str) -> EdgeVitError:
    """Recreate an edgevit error reported by another process (class by name, same message)."""
    cls = globals().get(class_name)
    if not (isinstance(cls, type) and issubclass(cls, EdgeVitError)):
        cls = EdgeVitError
    return with_message(cls, message)


class UnsupportedOperationError(EdgeVitError):
    """An artifact uses an operation that an edgevit component does not implement."""


class DeadlineError(EdgeVitError):
    """A sub-model of a split plan did not answer before the request's deadline."""

    exit_code = 1


class WorkerError(EdgeVitError):
    """A sub-model's worker failed or died, and failed again after one restart and retry."""

    exit_code = 1


class ClusterError(EdgeVitError):
    """The distributed engine cannot run the plan: unreachable, or a device is absent."""
