"""stem-worker: run the tasks of an app from one or more queues."""

from __future__ import annotations

import logging
import os
import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from stem_sqlite import Stem, Worker, __version__
from stem_sqlite.paths import BASE_ENV

from .errors import entry
from .loader import add_stem_path, load_app
from .setup import bind_paths, default_app_spec, version_callback

log = logging.getLogger("stem_sqlite.worker")


class Pool(StrEnum):
    threads = "threads"
    processes = "processes"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


cli = typer.Typer(add_completion=True, pretty_exceptions_enable=False, rich_markup_mode=None)


@cli.command(
    help=(
        "Run the tasks of an app. Without -Q it serves every queue the app's tasks use "
        "('default' when none). First SIGTERM/SIGINT: warm shutdown (running tasks finish, "
        "up to --shutdown-timeout, unfinished jobs are released at once); a second signal "
        f"or SIGQUIT: hard shutdown. Without --broker/--backend the paths come from "
        f"STEM_SQLITE_BROKER_PATH / STEM_SQLITE_BACKEND_PATH or the base {BASE_ENV}."
    )
)
def main(
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app",
            "-A",
            envvar="STEM_APP",
            help="Module (pkg.tasks), file (path/tasks.py) or module:attr of the app.",
        ),
    ] = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-Q", help="A queue to consume (repeatable).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Tasks run at once (CPUs).")
    ] = None,
    pool: Annotated[
        Pool, typer.Option(help="Default pool of tasks that name none.")
    ] = Pool.threads,
    prefetch_multiplier: Annotated[
        int, typer.Option(min=1, help="Deliveries held per concurrency slot.")
    ] = 1,
    name: Annotated[
        str | None, typer.Option("--name", "-n", envvar="WORKER_NAME", help="Worker name.")
    ] = None,
    broker: Annotated[
        str | None, typer.Option(envvar="STEM_SQLITE_BROKER_PATH", help="Broker file.")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(envvar="STEM_SQLITE_BACKEND_PATH", help="Result backend file.")
    ] = None,
    visibility_timeout: Annotated[
        float | None, typer.Option(min=0.001, help="Lease length in seconds (default 30).")
    ] = None,
    poll_interval: Annotated[
        float | None, typer.Option(min=0.001, help="Longest wait between claims, seconds.")
    ] = None,
    shutdown_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds a warm shutdown waits for running tasks.")
    ] = 30.0,
    burst: Annotated[bool, typer.Option(help="Exit once the queues are empty.")] = False,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Log level.")] = "INFO",
    log_format: Annotated[LogFormat, typer.Option(help="text or json lines.")] = LogFormat.text,
    stem_path: Annotated[
        str | None,
        typer.Option(
            "--stem-path",
            envvar="STEM_PATH",
            help="Extra import folders for the app, separated by ':'.",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool | None, typer.Option("--version", callback=version_callback, is_eager=True)
    ] = None,
) -> int:
    level = loglevel.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise typer.BadParameter(f"unknown log level {loglevel!r}", param_hint="--loglevel")
    add_stem_path(stem_path)
    spec = app_spec or default_app_spec()
    app = load_app(spec, debug=debug) if spec else Stem()
    broker_options = {}
    if visibility_timeout is not None:
        broker_options["default_visibility_timeout"] = visibility_timeout
    if poll_interval is not None:
        broker_options["poll_interval"] = poll_interval
    paths = bind_paths(app, broker, backend, broker_options=broker_options)
    queues = (
        list(queue or [])
        or sorted({t.queue for t in app.tasks.values() if not t.name.startswith("stem.")})
        or ["default"]
    )
    worker = Worker(
        app,
        queues=queues,
        concurrency=concurrency,
        pool=pool.value,
        prefetch_multiplier=prefetch_multiplier,
        name=name,
        shutdown_timeout=shutdown_timeout,
    )
    from .output import setup_logging

    setup_logging(level, log_format.value)
    worker.run(
        burst=burst,
        on_ready=lambda: _banner(worker, paths.broker, paths.backend, spec, log_format.value),
    )
    app.close()
    return 0


def _banner(worker: Worker, broker: object, backend: object, spec: str | None, fmt: str) -> None:
    tasks = sorted(worker.app.tasks)
    broker_path = os.path.abspath(str(broker))
    backend_path = os.path.abspath(str(backend))
    if sys.stderr.isatty() and fmt == "text":
        body = (
            f"[b]app[/b]          {spec or '(built-in tasks only)'}\n"
            f"[b]broker[/b]       {broker_path}\n"
            f"[b]backend[/b]      {backend_path}\n"
            f"[b]queues[/b]       {', '.join(worker.queues)}\n"
            f"[b]pool[/b]         {worker.pool} x {worker.concurrency} "
            f"(prefetch {worker.prefetch})\n"
            f"[b]tasks[/b]        {', '.join(tasks)}"
        )
        Console(stderr=True).print(
            Panel(body, title=f"stem-worker {__version__} · {worker.name}", expand=False)
        )
        return
    log.info(
        "stem-worker %s %s ready: broker=%s backend=%s queues=%s pool=%s concurrency=%d tasks=%s",
        __version__,
        worker.name,
        broker_path,
        backend_path,
        ",".join(worker.queues),
        worker.pool,
        worker.concurrency,
        ",".join(tasks),
        extra={
            "stem": {
                "event": "ready",
                "worker": worker.name,
                "broker": broker_path,
                "backend": backend_path,
                "queues": worker.queues,
                "pool": worker.pool,
                "concurrency": worker.concurrency,
                "tasks": tasks,
            }
        },
    )


main_entry = entry(cli, "stem-worker")

if __name__ == "__main__":
    main_entry()
