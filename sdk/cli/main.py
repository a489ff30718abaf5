"""The ``edgevit`` entry point: every command group registered on one app, global flags
anywhere on the line, and every failure as one line with its exit code."""

from __future__ import annotations

import sys

import typer

from edgevit.errors import EdgeVitError, first_line, printable
from edgevit.optional import missing_module_error

from .app import app, state

# each module registers its commands on the app; --help lists them in this order
from . import export, inspect, apps, edvit  # noqa: E402,F401,I001  isort: skip

# flags of the whole program, accepted before or after the command
GLOBAL_FLAGS = ("--json", "--quiet", "-q", "--debug", "--version")


def _global_flags_first(args: list[str]) -> list[str]:
    """Move global flags to the front, so ``edgevit export ... --quiet`` works (not past ``--``)."""
    cut = args.index("--") if "--" in args else len(args)
    head = args[:cut]
    return [a for a in head if a in GLOBAL_FLAGS] + [a for a in head if a not in GLOBAL_FLAGS] + args[cut:]


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """The classes of typer's usage errors: its own (typer 0.29 vendors click) and click's
    (older typer, which imports click itself); click is never imported here."""
    types = [getattr(typer, "TyperException", None)]
    click = sys.modules.get("click")
    types.append(getattr(getattr(click, "exceptions", None), "ClickException", None))
    return tuple(t for t in types if isinstance(t, type))


def _usage_line(exc: BaseException) -> str:
    """One line for a usage error: what is wrong, and where to read the usage."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    where = getattr(ctx, "command_path", "") or "edgevit"
    return f"{' '.join(message.split())} (see '{where} --help')"


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors with exit codes 0 ok, 1 check failed, 2 bad input or usage."""
    args = _global_flags_first(list(sys.argv[1:] if argv is None else argv))
    try:
        result = app(args=args, prog_name="edgevit", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        sys.stderr.write("edgevit: aborted\n")
        code = 130
    except _usage_error_types() as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain 'edgevit': the help, printed by typer
            code = 0
        else:
            sys.stderr.write(f"edgevit: error: {printable(_usage_line(exc))}\n")
            code = 2
    except EdgeVitError as exc:
        if state.debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"edgevit: error: {printable(str(exc))}\n")
        code = exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("edgevit: interrupted\n")
        code = 130
    except ModuleNotFoundError as exc:  # an optional dependency imported deep inside a command
        missing = missing_module_error(exc)
        if missing is None or state.debug:
            raise
        sys.stderr.write(f"edgevit: error: {missing}\n")
        code = missing.exit_code
    except Exception as exc:  # a bug: one line unless --debug
        if state.debug:
            raise
        sys.stderr.write(f"edgevit: internal error: {type(exc).__name__}: {first_line(exc)} "
                         "(rerun with --debug for the traceback)\n")
        code = 1
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
