"""Run many ``edgevit`` command lines fast and safely: a worker process imports the CLI once
(coremltools takes seconds to import) and runs one command after another, each with its
own timeout, a memory cap, and its peak memory measured.

The worker redirects file descriptors 1 and 2 for every command, so whatever a native
library prints is captured too. A command that hangs, crashes the process or exceeds the
memory cap is reported as such and the worker is started again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMORY_CAP = 3 << 30  # address space a worker may grow by beyond its start-up (RLIMIT_AS)

_WORKER = r'''
import json, os, resource, sys, tempfile, traceback
for name in sys.argv[1].split(","):   # modules the device profile does not have
    if name:
        sys.modules[name] = None
import edgevit.cli.main
try:
    import coremltools  # noqa: F401  (imported once, here)
except ImportError:
    pass
reply = os.fdopen(os.dup(1), "w")
commands = sys.stdin
def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0
size = vm("VmSize:")
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[2]), resource.RLIM_INFINITY))
reply.write("ready\n"); reply.flush()
for line in commands:
    argv = json.loads(line)
    try:
        open("/proc/self/clear_refs", "w").write("5")   # reset the peak resident size
    except OSError:
        pass
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        escaped = None
        try:
            code = edgevit.cli.main.main(argv)
        except BaseException as exc:
            code, escaped = -1, traceback.format_exc()
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
            os.close(saved[0]); os.close(saved[1])
        out.seek(0); err.seek(0)
        stderr = err.read().decode("utf-8", "replace") + (escaped or "")
        answer = {"code": code, "stdout": out.read().decode("utf-8", "replace"), "stderr": stderr,
                  "peak_rss": vm("VmHWM:")}
    reply.write(json.dumps(answer) + "\n"); reply.flush()
'''


@dataclass
class Outcome:
    """What one command did: exit code (None if it hung or crashed), output, peak RSS."""

    argv: list[str]
    code: int | None
    stdout: str = ""
    stderr: str = ""
    peak_rss: int = 0
    hung: bool = False
    signal: int | None = None

    @property
    def clean(self) -> bool:
        """Exit 0, 1, or 2 with exactly one ``edgevit: error:`` line; never a hang, a signal,
        a traceback or an internal error."""
        if self.code is None or self.hung or self.signal:
            return False
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        if "Traceback" in self.stderr or "internal error" in self.stderr:
            return False
        if self.code == 2:
            return len(lines) == 1 and lines[0].startswith("edgevit: error:")
        return self.code in (0, 1)

    def first_error(self) -> str:
        return next((line for line in self.stderr.splitlines() if line.strip()), "")


class CliWorker:
    """One worker process (see the module doc); ``block`` lists modules made unimportable."""

    def __init__(self, block: tuple[str, ...] = (), memory_cap: int = MEMORY_CAP, cwd: Path | None = None) -> None:
        self.block, self.memory_cap, self.cwd = block, memory_cap, cwd
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = dict(os.environ)
        env.pop("EDGEVIT_DEBUG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, ",".join(self.block), str(self.memory_cap)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            cwd=self.cwd, start_new_session=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the CLI worker did not start (exit {self.proc.wait()})")

    def run(self, argv: list[str], timeout: float = 60.0) -> Outcome:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        proc = self.proc
        proc.stdin.write(json.dumps(argv) + "\n")
        proc.stdin.flush()
        line = _readline(proc, timeout)
        if line:
            return Outcome(argv, **json.loads(line))
        hung = proc.poll() is None
        if hung:
            os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
        self.proc, self.restarts = None, self.restarts + 1
        return Outcome(argv, None, hung=hung, signal=-code if code < 0 else None)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    """A line from the worker within ``timeout`` s ('' if it hung or died)."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                return proc.stdout.readline()
    return ""
