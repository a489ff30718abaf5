"""Silence converters' chatter (prints, warnings, logs, native stderr) during a step."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet_converters() -> Iterator[None]:
    """Route Python and C-level stdout/stderr to a scratch file; drop warnings and logs.

    Set ``EDGEVIT_DEBUG=1`` to let everything through.
    """
    if os.environ.get("EDGEVIT_DEBUG"):
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            logging.disable(previous)
