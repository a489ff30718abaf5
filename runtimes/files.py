"""Reading artifact files as untrusted input.

Only regular files are read (a FIFO, a device or a directory is refused before any read,
and opening never blocks), each read is bounded by the file's real size, never by a size
that a header claims, and files named inside a package must lie inside it: no absolute
paths, no ``..``, no symlink that leaves the package. Refusals name the path as the
artifact wrote it and say nothing about what lies outside the artifact.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from edgevit.errors import ArtifactError

MAX_FILE_BYTES = 2 << 30  # 2 GiB: the protobuf and flatbuffer limit of ONNX, Core ML specs and TFLite


def read_regular_file(path: str | Path, what: str | None = None, limit: int = MAX_FILE_BYTES) -> bytes:
    """The whole content of a regular file of at most ``limit`` bytes (``ArtifactError`` otherwise)."""
    what = what or str(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # O_NONBLOCK: a FIFO cannot hang open()
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ArtifactError(f"{what} is missing") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {what}: {exc.strerror or type(exc).__name__}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{what} is not a regular file")
        if info.st_size > limit:
            raise ArtifactError(f"{what} is {info.st_size} bytes, more than edgevit reads ({limit} bytes)")
        chunks, left = [], info.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left:
            raise ArtifactError(f"{what} shrank while it was read")
        return b"".join(chunks)
    except OSError as exc:
        raise ArtifactError(f"cannot read {what}: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)


def inside(root: Path, relative: str, what: str) -> Path:
    """``root / relative`` for a path an artifact names, refused unless it stays inside
    ``root`` (checked on the text first, then with every symlink resolved)."""
    parts = PurePosixPath(relative).parts
    if not relative or "\0" in relative or "\\" in relative or relative.startswith("/") or ".." in parts:
        raise ArtifactError(f"{what} {relative!r} is not a relative path inside the artifact")
    candidate = Path(root, *parts)
    real_root = os.path.realpath(root)
    real = os.path.realpath(candidate)
    if os.path.commonpath([real_root, real]) != real_root:
        raise ArtifactError(f"{what} {relative!r} leaves the artifact (through a symbolic link)")
    return Path(real)
