"""The ``edgevit`` Typer app and what every command shares: global flags, safe console
output, JSON or tables, progress, and the options several commands take."""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

import typer

from edgevit._version import __version__
from edgevit.errors import InputError, printable

app = typer.Typer(
    name="edgevit",
    help="Deploy mobile hybrid vision transformers to ONNX, Core ML and TFLite, with verified parity.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


class _State:
    json = False
    quiet = False
    debug = False


state = _State()

# options shared by several commands: one name, one meaning, one help text
NO_INTEGRITY_CHECK = typer.Option(False, "--no-integrity-check",
                                  help="Use the artifact even if it changed since edgevit exported it.")
RUNTIME = typer.Option("auto", "--runtime",
                       help="Runtime to run the artifact with: auto, onnxruntime, litert, coreml, reference or torch.")
THREADS = typer.Option(None, "--threads", help="Runtime threads (default: the runtime's).")
VERIFY_DATA = typer.Option(None, "--verify-data", metavar="DATA",
                           help="Also verify on these images: digits, an image folder or an .npz (as --calibration); "
                                "edgevit's photos and the random inputs always run.")
VERIFY_SAMPLES = typer.Option(16, "--verify-samples", help="Samples of --verify-data verified on.")
NUM_INPUTS = typer.Option(3, "--num-inputs", help="Random inputs verified on (besides the photos and any data).")
IMAGE = typer.Option(None, "--image", help="Also verify on this image.")
PROVIDERS = typer.Option(None, "--providers", metavar="LIST",
                         help="ONNX Runtime execution providers, best first, e.g. tensorrt,cuda,cpu "
                              "(the one really used is reported).")
# --top-k: every command that ranks classes; its old spelling --top ('edgevit run' before 0.2.0)
# is accepted by run and predict, and not shown
TOP_ALIAS = typer.Option(None, "--top", hidden=True)


def top_k_option(default: int):
    """The ``--top-k`` option with ``default`` in its help (the value itself comes through
    :func:`top_k_value`)."""
    return typer.Option(None, "--top-k", metavar="K", help=f"How many classes to show (default {default}).")


def top_k_value(top_k: Optional[int], alias: Optional[int], default: int) -> int:
    """The class count from ``--top-k`` or its old spelling ``--top`` (not both), else ``default``."""
    if top_k is not None and alias is not None:
        raise InputError("give --top-k once (--top is its old name)")
    value = next((v for v in (top_k, alias) if v is not None), default)
    if value < 1:
        raise InputError("--top-k must be at least 1")
    return value


def providers_list(text: Optional[str]) -> Optional[list[str]]:
    """``--providers`` as a list of provider names (None: the runtime's default)."""
    from edgevit.runtimes.onnxruntime import parse_providers

    return None if text is None else parse_providers(text)


def safe_console(stderr: bool = False):
    """A rich console for text that quotes untrusted artifacts: no markup ("[/x]" prints as
    is) and every string escaped to printable characters (no terminal control codes)."""
    from rich.console import Console

    class SafeConsole(Console):
        def render_str(self, text: str, **options):  # every plain string printed, table cells included
            return super().render_str(printable(text), **options)

    safe = SafeConsole(stderr=stderr, highlight=False, soft_wrap=False, markup=False, emoji=False)
    if not safe.is_terminal:  # logs and pipes: wide enough for every table column
        safe.width = max(safe.width, 160)
    return safe


def emit(data: Any, human) -> None:
    """Print ``data`` as JSON with --json, else call ``human()`` to print tables."""
    if state.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        human()


class Progress:
    """A spinner on stderr with the current step, on a terminal only (not with --quiet/--json).

    ``lines=True`` (long jobs such as training) also prints each step as a plain line on
    stderr when there is no spinner (not a terminal, or --json), unless --quiet.
    :meth:`step` (called by the training loops after every batch) draws a bar on the
    spinner's line; without a spinner it prints nothing.
    """

    def __init__(self, lines: bool = False) -> None:
        self._status = None
        self._lines = lines and not state.quiet

    def __enter__(self):
        if not (state.quiet or state.json) and sys.stderr.isatty():
            self._status = safe_console(stderr=True).status("starting")
            self._status.__enter__()
        return self

    def __call__(self, message: str) -> None:
        if self._status is not None:
            self._status.update(message)
            self._status.console.print(f"- {message}", style="dim")
        elif self._lines:
            sys.stderr.write(f"- {message}\n")
            sys.stderr.flush()

    def step(self, label: str, done: int, total: int) -> None:
        """``done`` of ``total`` steps of ``label``: a bar on a terminal, nothing elsewhere."""
        if self._status is not None:
            self._status.update(f"{label} {progress_bar(done, total)} {done}/{total}")

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


def progress_bar(done: int, total: int, width: int = 24) -> str:
    """``[#######.........]``: the part of ``total`` that is ``done``."""
    filled = 0 if total <= 0 else min(width, max(0, int(width * done / total)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _print_version(asked: bool) -> None:
    if asked:
        sys.stdout.write(f"edgevit {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _options(
    json_output: bool = typer.Option(False, "--json", help="Print machine-readable JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and converter logs."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print edgevit's version and exit."),
) -> None:
    state.json, state.quiet, state.debug = json_output, quiet, debug
    if debug:
        import os

        os.environ["EDGEVIT_DEBUG"] = "1"
