"""Output locations: checked before long work starts, written atomically at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputPathError


def ensure_writable_dir(directory: Path) -> Path:
    """Create ``directory`` if needed and prove it is writable (``OutputPathError`` if not)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".edgevit-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputPathError(f"cannot write to output directory {directory}: {reason}") from None
    return directory


@contextlib.contextmanager
def staged_path(final: Path) -> Iterator[Path]:
    """A scratch path named like ``final``, in a private directory beside it (same
    filesystem, so :func:`publish` is an atomic rename). The directory, and whatever was
    not published, is removed on exit, failure included."""
    staging = Path(tempfile.mkdtemp(prefix=".edgevit-tmp-", dir=final.parent))
    try:
        yield staging / final.name
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staged: Path, final: Path) -> None:
    """Move a finished file or directory into place atomically, replacing what was there."""
    if staged.is_dir():
        old = None
        if final.exists():
            old = staged.parent / (".old-" + final.name)
            os.replace(final, old)
        os.replace(staged, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    else:
        if final.is_dir():
            shutil.rmtree(final)
        os.replace(staged, final)


def artifact_size(path: Path) -> int:
    """Bytes of a file, or of the regular files of a directory tree (an .mlpackage);
    symbolic links are not followed (they add nothing: what they point at is not the artifact's)."""
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for folder, _, names in os.walk(path):  # does not descend into linked folders
        for name in names:
            info = os.lstat(os.path.join(folder, name))
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total
