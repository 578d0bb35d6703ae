"""stem-enqueue: enqueue a task by name from the command line."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from stem_sqlite import AsyncResult, EnqueueOptions, ResultTimeout, Stem, TaskState
from stem_sqlite.producer import build_envelope
from stem_sqlite.timeutil import parse_iso

from .errors import entry, fail
from .loader import add_stem_path, load_app
from .output import print_json
from .setup import bind_paths, default_app_spec, version_callback

_KWARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
BATCH = 1000

cli = typer.Typer(add_completion=True, pretty_exceptions_enable=False, rich_markup_mode=None)


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses (42, 1.5, true, null, [1], {"a": 1},
    "quoted"), otherwise the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text
    except RecursionError:
        fail(f"the value {text[:40]!r}... is nested too deeply; flatten it")


def split_arguments(values: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """Positional values and ``key=value`` keyword arguments."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for text in values:
        match = _KWARG.match(text)
        if match:
            kwargs[match.group(1)] = parse_value(match.group(2))
        else:
            args.append(parse_value(text))
    return args, kwargs


def parse_eta(text: str) -> datetime:
    try:
        return parse_iso(text)
    except ValueError:
        fail(
            f"--eta {text!r} is not an ISO-8601 time with a timezone; "
            "write e.g. 2026-12-04T18:30:00Z or 2026-12-04T19:30:00+01:00"
        )


def parse_expires(text: str) -> float | datetime:
    try:
        seconds = float(text)
    except ValueError:
        try:
            return parse_iso(text)
        except ValueError:
            fail(f"--expires {text!r} is neither seconds nor an ISO-8601 time with a timezone")
    if seconds < 0:
        fail(f"--expires must be 0 seconds or more, got {text}")
    return seconds


@cli.command(
    help=(
        "Enqueue TASK. ARGS are positional values (JSON when they parse, else text) and "
        "key=value keyword arguments. Prints the task id. Without --app the task is "
        "enqueued by name and the worker decides; with --app the name and arguments are "
        "checked against the task. The producer never writes the result backend."
    )
)
def main(
    task: Annotated[str, typer.Argument(help="Task name, e.g. stem.echo.")],
    values: Annotated[list[str] | None, typer.Argument(help="Arguments.")] = None,
    kwargs_json: Annotated[
        str | None, typer.Option("--kwargs", help="Keyword arguments as a JSON object.")
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-Q", help="Queue.")] = None,
    priority: Annotated[int | None, typer.Option(help="Higher runs first.")] = None,
    countdown: Annotated[
        float | None, typer.Option(min=0, help="Run no sooner than this many seconds.")
    ] = None,
    eta: Annotated[str | None, typer.Option(help="Run no sooner than this ISO time.")] = None,
    expires: Annotated[
        str | None, typer.Option(help="Seconds, or ISO time, after which it is cancelled.")
    ] = None,
    task_id: Annotated[str | None, typer.Option(help="Use this id (re-use replaces).")] = None,
    max_retries: Annotated[int | None, typer.Option(min=0, help="Retries allowed.")] = None,
    ignore_result: Annotated[bool, typer.Option(help="Do not store the return value.")] = False,
    count: Annotated[int, typer.Option(min=1, help="Enqueue this many copies.")] = 1,
    wait: Annotated[bool, typer.Option(help="Wait for the result and print it.")] = False,
    timeout: Annotated[float | None, typer.Option(min=0, help="Seconds --wait waits.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    broker: Annotated[
        str | None, typer.Option(envvar="STEM_SQLITE_BROKER_PATH", help="Broker file.")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(envvar="STEM_SQLITE_BACKEND_PATH", help="Result backend (for --wait)."),
    ] = None,
    app_spec: Annotated[
        str | None, typer.Option("--app", "-A", envvar="STEM_APP", help="App to check against.")
    ] = None,
    stem_path: Annotated[
        str | None, typer.Option("--stem-path", envvar="STEM_PATH", help="Extra import folders.")
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool | None, typer.Option("--version", callback=version_callback, is_eager=True)
    ] = None,
) -> int:
    if not task.strip():
        fail("the task name is empty")
    args, kwargs = split_arguments(list(values or []))
    if kwargs_json is not None:
        try:
            extra = json.loads(kwargs_json)
        except RecursionError:
            fail("--kwargs is nested too deeply; flatten it")
        except json.JSONDecodeError as exc:
            fail(
                f"--kwargs is not valid JSON ({exc.msg} at position {exc.pos}); "
                """write e.g. --kwargs '{"x": 1}'"""
            )
        if not isinstance(extra, dict):
            fail("--kwargs must be a JSON object, e.g. --kwargs '{\"x\": 1}'")
        kwargs.update(extra)
    if countdown is not None and eta is not None:
        fail("give --countdown or --eta, not both")
    if count > 1 and task_id is not None:
        fail("--task-id names one task; it cannot be used with --count")
    options = EnqueueOptions(
        task_id=task_id,
        queue=queue,
        priority=priority,
        countdown=countdown,
        eta=parse_eta(eta) if eta is not None else None,
        expires=parse_expires(expires) if expires is not None else None,
        max_retries=max_retries,
        ignore_result=True if ignore_result else None,
    )
    add_stem_path(stem_path)
    spec = app_spec or default_app_spec()
    app = load_app(spec, debug=debug) if spec else Stem()
    definition = None
    if spec:
        definition = app.get_task(task)
        definition.check_arguments(tuple(args), kwargs)
    envelope = build_envelope(
        task, args, kwargs, options, task_defaults=definition, clock=app.clock
    )
    bind_paths(app, broker, backend, need_backend=wait, backend_options={"cleanup_interval": 0})
    try:
        if count == 1:
            app.publish(envelope, options)
            ids = [envelope.id]
        else:
            ids = _publish_copies(app, envelope, count)
        if not wait:
            if as_json:
                print_json({"id": ids[0]} if count == 1 else {"ids": ids})
            else:
                print("\n".join(ids))
            return 0
        return _wait(app, ids, timeout, as_json)
    finally:
        app.close()


def _publish_copies(app: Stem, envelope: Any, count: int) -> list[str]:
    """``count`` copies of the call, each with its own id, in transactions of BATCH."""
    sizes = [min(BATCH, count - start) for start in range(0, count, BATCH)]
    ids: list[str] = []
    if not sys.stderr.isatty():
        for size in sizes:
            ids += app.broker.publish_copies(envelope, size)
        return ids
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        bar = progress.add_task("enqueueing", total=count)
        for size in sizes:
            ids += app.broker.publish_copies(envelope, size)
            progress.advance(bar, size)
    return ids


def _wait(app: Stem, ids: list[str], timeout: float | None, as_json: bool) -> int:
    failed = False
    results = []
    for task_id in ids:
        try:
            status = AsyncResult(task_id, app).wait(timeout)
        except ResultTimeout as exc:
            print(f"stem-enqueue: {exc}", file=sys.stderr)
            return 1
        failed = failed or status.state is not TaskState.SUCCEEDED
        results.append(status)
        if as_json:
            print_json(
                {
                    "id": status.id,
                    "state": status.state.value,
                    "result": status.payload,
                    "attempt": status.attempt,
                    "error": status.error.to_dict() if status.error else None,
                }
            )
        elif status.state is TaskState.SUCCEEDED:
            print(json.dumps(status.payload, ensure_ascii=False))
        else:
            error = status.error
            detail = f"{error.type}: {error.message}" if error else "no error recorded"
            print(f"{status.id} {status.state.value}: {detail}", file=sys.stderr)
    return 1 if failed else 0


main_entry = entry(cli, "stem-enqueue")

if __name__ == "__main__":
    main_entry()
