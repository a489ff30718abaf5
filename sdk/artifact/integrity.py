"""Artifact integrity: a digest of what edgevit verified, kept inside the artifact.

At export, edgevit records in the artifact's metadata (``integrity.sha256``) the SHA-256
of the artifact's *content*: the bytes its loader reads (ONNX and TFLite: the file; Core
ML: the specification and the weight files the program names), each framed by its
length. The digest lives inside what it covers, so wherever the recorded value appears as
``"sha256":"<64 hex digits>"`` it is hashed as 64 zeros. Any later change to the graph,
the weights or the metadata changes the digest; :func:`edgevit.load` then refuses the
artifact (``integrity_check=False`` / ``--no-integrity-check`` to load it anyway) and
``edgevit info`` shows it. This notices corruption and edits; it is not a signature
(whoever rewrites an artifact can rewrite its digest too).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

PLACEHOLDER = "0" * 64


def _token(hexdigest: str) -> bytes:
    return b'"sha256":"' + hexdigest.encode("ascii") + b'"'


def content_digest(chunks: Iterable[bytes], recorded: str | None = None) -> str:
    """SHA-256 of ``chunks`` (each framed by its length), with ``recorded`` hashed as zeros."""
    digest = hashlib.sha256()
    find = _token(recorded) if recorded else None
    blank = _token(PLACEHOLDER)
    for chunk in chunks:
        view = memoryview(chunk)
        digest.update(len(view).to_bytes(8, "little"))
        start = 0
        while find is not None and (at := chunk.find(find, start)) >= 0:
            digest.update(view[start:at])
            digest.update(blank)
            start = at + len(find)
        digest.update(view[start:])
    return digest.hexdigest()


@dataclass(frozen=True)
class Integrity:
    """The digest an artifact records (None: none recorded) and the one its content has."""

    recorded: str | None
    actual: str

    @property
    def status(self) -> str:
        """``"intact"``, ``"modified"``, or ``"unrecorded"`` (not exported by this edgevit)."""
        if self.recorded is None:
            return "unrecorded"
        return "intact" if self.recorded == self.actual else "modified"

    def to_dict(self) -> dict[str, str | None]:
        return {"status": self.status, "recorded": self.recorded, "actual": self.actual}


def seal(path: Path, digest: str) -> None:
    """Write ``digest`` over the placeholder in every file of the artifact that holds it
    (same length: nothing else moves)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    placeholder, value = _token(PLACEHOLDER), _token(digest)
    for file in files:
        data = file.read_bytes()
        if placeholder in data:
            tmp = file.with_name(f".{file.name}.sealing")
            tmp.write_bytes(data.replace(placeholder, value))
            os.replace(tmp, file)
