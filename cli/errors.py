"""How every tool reports bad input: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import sys
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
    try:
        result: Any = app(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code or 0)
    except click.exceptions.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return 130
    except click.UsageError as exc:
        if debug:
            raise
        hint = f" (see {prog} --help)"
        print(f"{prog}: error: {exc.format_message()}{hint}", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc.format_message()}", file=sys.stderr)
        return 2
    except (UsageProblem, StemError) as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


def entry(app: typer.Typer, prog: str) -> Callable[[], None]:
    """A console-script ``main`` for ``app``."""

    def main() -> None:
        sys.exit(run_app(app, prog))

    return main
