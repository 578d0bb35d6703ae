"""How every tool reports bad input: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import click
import typer

from stem_sqlite import StemError


class UsageProblem(Exception):
    """Bad input or configuration found by the CLI itself (exit code 2)."""


def fail(message: str) -> NoReturn:
    raise UsageProblem(message)


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv


def run_app(app: typer.Typer, prog: str, argv: list[str] | None = None) -> int:
    """Run a Typer app and turn every foreseeable error into one clear line and exit 2.

    Unexpected exceptions (bugs) keep their traceback; ``--debug`` shows it for the
    foreseeable ones too.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = debug_requested(args)
    no_args = getattr(click.exceptions, "NoArgsIsHelpError", None)
    try:
        result: Any = app(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code or 0)
    except Exception as exc:  # noqa: BLE001 - sorted by _report; bugs are raised again
        if no_args is not None and isinstance(exc, no_args):
            print(exc.format_message())  # bare `stem`: its help, not an error
            return 0
        return _report(exc, prog, debug)
    return int(result or 0)


def _report(exc: Exception, prog: str, debug: bool) -> int:
    """One line for a foreseeable error (after its traceback under --debug); a bug's
    exception is raised again so that its traceback is never hidden."""
    if isinstance(exc, click.exceptions.Abort):
        print(f"{prog}: aborted", file=sys.stderr)
        return 130
    if isinstance(exc, click.UsageError):
        message = f"{exc.format_message()} (see {prog} --help)"
    elif isinstance(exc, click.ClickException):
        message = exc.format_message()
    elif isinstance(exc, (UsageProblem, StemError)):
        message = str(exc)
    else:
        raise exc
    if debug:
        traceback.print_exception(exc)
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def entry(app: typer.Typer, prog: str) -> Callable[[], None]:
    """A console-script ``main`` for ``app``."""

    def main() -> None:
        sys.exit(run_app(app, prog))

    return main
