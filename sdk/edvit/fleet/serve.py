"""``edgevit fleet``: bring a fleet up, then run a command against it or wait for Ctrl-C.

With a command, the command runs with ``RAY_ADDRESS`` set to the fleet's head (so
``edgevit run --backend ray`` and ``ray.init()`` find it) and the fleet is torn down when
it ends; its exit code is the result. Without one, the fleet stays up until SIGINT
(Ctrl-C), SIGTERM or SIGHUP. Either way nothing of the fleet is left afterwards.
Torch-free.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ...errors import InputError
from ..assign import Device
from .core import Fleet


def serve(devices: Sequence[Device] | str | Path, command: Sequence[str] = (), *,
          on_up: Callable[[Fleet], None] = lambda fleet: None, say: Callable[[str], None] | None = None,
          **options) -> int:
    """Run ``command`` against a fleet of ``devices`` (or hold the fleet until interrupted); the exit code."""
    with Fleet(devices, say=say, **options) as fleet:
        on_up(fleet)
        if not command:
            try:
                threading.Event().wait()  # until a signal: the fleet's handlers tear it down first
            except KeyboardInterrupt:
                return 0
        try:
            child = subprocess.Popen(list(command), env={**os.environ, "RAY_ADDRESS": fleet.address})
        except OSError as exc:
            raise InputError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
        try:
            return child.wait()
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
    return 0
