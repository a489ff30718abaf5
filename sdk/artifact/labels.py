"""Class labels: given as a list, or read from a text file with one label per line."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import InputError


def read_labels(labels: Sequence[str] | str | Path | None) -> list[str] | None:
    """Class labels from a list, or a text file with one label per line."""
    if labels is None or isinstance(labels, (list, tuple)):
        return list(labels) if labels is not None else None
    path = Path(labels)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise InputError(f"cannot read labels file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read labels file {path}: it is not UTF-8 text") from None
    return [line for line in lines if line]
