"""stem: inspect and administer the broker and the result backend."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from stem_sqlite import SqliteBroker, SqliteResultBackend, TaskState
from stem_sqlite.model import DeadLetterEntry, TaskStatus
from stem_sqlite.paths import resolve_paths
from stem_sqlite.timeutil import iso, parse_iso, utcnow

from .errors import entry, fail
from .output import print_json, print_table, to_jsonable
from .setup import version_callback

cli = typer.Typer(
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Inspect and administer a stem-sqlite deployment (tables on a terminal, --json for "
    "scripts). Paths: --broker/--backend, else STEM_SQLITE_BROKER_PATH / "
    "STEM_SQLITE_BACKEND_PATH / STEM_SQLITE_PATH.",
)
dlq = typer.Typer(help="Dead letters of a queue: list, show, replay, purge.", no_args_is_help=True)
cli.add_typer(dlq, name="dlq")


class Settings:
    broker: str | None = None
    backend: str | None = None
    namespace: str = "stem"
    as_json: bool = False


settings = Settings()

#: ``--json`` is accepted before the command (``stem --json queues``) and after it.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _json(flag: bool) -> None:
    if flag:
        settings.as_json = True


@cli.callback()
def options(
    broker: Annotated[
        str | None, typer.Option(envvar="STEM_SQLITE_BROKER_PATH", help="Broker file.")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(envvar="STEM_SQLITE_BACKEND_PATH", help="Result backend file.")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Namespace of the rows.")] = "stem",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool | None, typer.Option("--version", callback=version_callback, is_eager=True)
    ] = None,
) -> None:
    settings.broker, settings.backend = broker, backend
    settings.namespace, settings.as_json = namespace, as_json


def _existing(path: Path, role: str) -> str:
    if not path.exists():
        fail(
            f"no {role} database at {os.path.abspath(path)}; check the path (the file is "
            "created by the first worker or producer that uses it)"
        )
    return str(path)


def open_broker() -> SqliteBroker:
    paths = resolve_paths(broker=settings.broker, backend=settings.backend)
    # Administration only reads (or changes what it is asked to): no sweeper.
    return SqliteBroker.open(
        _existing(paths.broker, "broker"), namespace=settings.namespace, sweeper_interval=0
    )


def open_backend() -> SqliteResultBackend:
    paths = resolve_paths(broker=settings.broker, backend=settings.backend)
    return SqliteResultBackend.open(
        _existing(paths.backend, "result backend"), namespace=settings.namespace, cleanup_interval=0
    )


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_iso(text)
    except ValueError:
        fail(f"--since {text!r} is not an ISO-8601 time with a timezone")


@cli.command()
def queues(as_json: JsonFlag = False) -> None:
    """Pending, delayed, in-flight and dead jobs of every queue."""
    _json(as_json)
    with open_broker() as broker:
        rows = [
            {
                "queue": q,
                "pending": broker.pending_count(q),
                "delayed": broker.delayed_count(q),
                "inflight": broker.inflight_count(q),
                "dead": broker.dead_letter_count(q),
            }
            for q in broker.queues()
        ]
    if settings.as_json:
        print_json(rows)
        return
    print_table(
        "queues",
        ["queue", "pending", "delayed", "in flight", "dead"],
        [list(r.values()) for r in rows],
    )


def _entry_dict(entry: DeadLetterEntry) -> dict[str, Any]:
    return {
        "id": entry.envelope.id,
        "task": entry.envelope.name,
        "queue": entry.envelope.queue,
        "attempt": entry.envelope.attempt,
        "reason": entry.reason,
        "meta": entry.meta,
        "dead_at": iso(entry.dead_at),
    }


@dlq.command("list")
def dlq_list(
    queue: str,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Dead letters of QUEUE, newest first."""
    _json(as_json)
    with open_broker() as broker:
        page = broker.list_dead_letters(queue, limit=limit, offset=offset)
    items = [_entry_dict(e) for e in page.entries]
    if settings.as_json:
        print_json({"entries": items, "next_offset": page.next_offset})
        return
    print_table(
        f"dead letters of {queue}",
        ["id", "task", "attempt", "reason", "dead at"],
        [[i["id"], i["task"], i["attempt"], i["reason"], i["dead_at"]] for i in items],
    )


@dlq.command("show")
def dlq_show(
    queue: str,
    task_id: str,
    as_json: JsonFlag = False,
) -> None:
    """One dead letter with its envelope."""
    _json(as_json)
    with open_broker() as broker:
        entry_ = broker.get_dead_letter(queue, task_id)
    if entry_ is None:
        print(f"stem: no dead letter {task_id} in queue {queue}", file=sys.stderr)
        raise typer.Exit(1)
    data = {**_entry_dict(entry_), "envelope": entry_.envelope.to_dict()}
    if settings.as_json:
        print_json(data)
        return
    print_table(
        f"dead letter {task_id}", ["field", "value"], [[k, v] for k, v in to_jsonable(data).items()]
    )


@dlq.command("replay")
def dlq_replay(
    queue: str,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    since: Annotated[str | None, typer.Option(help="Only entries dead since (ISO).")] = None,
    delay: Annotated[float | None, typer.Option(min=0, help="Delay the replayed jobs.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Only show what would be replayed.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Put dead letters back on QUEUE (newest first)."""
    _json(as_json)
    with open_broker() as broker:
        result = broker.replay_dead_letters(
            queue, limit=limit, since=_since(since), delay=delay, dry_run=dry_run
        )
    ids = [e.envelope.id for e in result.entries]
    if settings.as_json:
        print_json(
            {"replayed": [] if result.dry_run else ids, "dry_run": result.dry_run, "entries": ids}
        )
        return
    verb = "would replay" if result.dry_run else "replayed"
    print(f"{verb} {len(ids)} job(s)" + ("".join(f"\n  {i}" for i in ids)))


@dlq.command("purge")
def dlq_purge(
    queue: str,
    since: Annotated[str | None, typer.Option(help="Only entries dead since (ISO).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many, newest.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Delete dead letters of QUEUE."""
    _json(as_json)
    with open_broker() as broker:
        count = broker.purge_dead_letters(queue, since=_since(since), limit=limit)
    print_json({"purged": count}) if settings.as_json else print(f"purged {count} dead letter(s)")


@cli.command()
def purge(
    queue: str,
    as_json: JsonFlag = False,
) -> None:
    """Delete every job of QUEUE (ready, delayed and in flight; not its dead letters)."""
    _json(as_json)
    with open_broker() as broker:
        count = broker.purge(queue)
    print_json({"purged": count}) if settings.as_json else print(f"purged {count} job(s)")


def _status_dict(status: TaskStatus) -> dict[str, Any]:
    return {
        "id": status.id,
        "state": status.state.value,
        "result": status.payload,
        "attempt": status.attempt,
        "task": status.meta.get("task") or status.meta.get("stem.task"),
        "error": status.error.to_dict() if status.error else None,
        "meta": status.meta,
    }


@cli.command()
def result(
    task_id: str,
    as_json: JsonFlag = False,
) -> None:
    """The stored status of one task (exit 1 when there is none)."""
    _json(as_json)
    with open_backend() as backend:
        status = backend.get(task_id)
    if status is None:
        print(
            f"stem: no status for task {task_id} (unknown, not received yet, or expired)",
            file=sys.stderr,
        )
        raise typer.Exit(1)
    data = _status_dict(status)
    if settings.as_json:
        print_json(data)
        return
    rows = [[k, v] for k, v in to_jsonable(data).items() if k != "meta"]
    print_table(f"task {task_id}", ["field", "value"], rows)


@cli.command()
def tasks(
    state: Annotated[str | None, typer.Option(help="Only this state.")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Recent task statuses, newest update first."""
    _json(as_json)
    if state is not None and state not in {s.value for s in TaskState}:
        fail(
            f"--state {state!r} is not a state; use one of " + ", ".join(s.value for s in TaskState)
        )
    with open_backend() as backend:
        page = backend.list_task_statuses(state=state, queue=queue, limit=limit)
    items = [{**_status_dict(r.status), "updated_at": iso(r.updated_at)} for r in page.items]
    if settings.as_json:
        print_json(items)
        return
    print_table(
        "tasks",
        ["id", "task", "state", "attempt", "result", "updated"],
        [
            [i["id"], i["task"], i["state"], i["attempt"], i["result"], i["updated_at"]]
            for i in items
        ],
    )


@cli.command()
def workers(as_json: JsonFlag = False) -> None:
    """Workers with a live heartbeat: name, age of the heartbeat, in flight, queues."""
    _json(as_json)
    with open_backend() as backend:
        beats = backend.list_worker_heartbeats()
    now = utcnow()
    items = [
        {
            "name": b.worker_id,
            "age": round((now - b.timestamp).total_seconds(), 3),
            "inflight": b.inflight,
            "queues": [q.get("name") for q in b.queues],
            "concurrency": b.concurrency,
            "extras": b.extras,
        }
        for b in beats
    ]
    if settings.as_json:
        print_json(items)
        return
    print_table(
        "workers",
        ["name", "age (s)", "in flight", "queues"],
        [
            [i["name"], i["age"], i["inflight"], ",".join(map(str, i["queues"]))]  # type: ignore[call-overload]
            for i in items
        ],
    )


@cli.command()
def health(
    max_age: Annotated[
        float, typer.Option(min=0, help="Freshest heartbeat must be younger.")
    ] = 60.0,
    as_json: JsonFlag = False,
) -> None:
    """Exit 0 only if both files open with a current schema and a worker heartbeat is fresh."""
    _json(as_json)
    problems: list[str] = []
    fresh = 0
    try:
        with open_broker():
            pass
    except Exception as exc:  # noqa: BLE001 - every failure is a health problem
        problems.append(f"broker: {exc}")
    try:
        with open_backend() as backend:
            cutoff = utcnow() - timedelta(seconds=max_age)
            fresh = sum(
                1
                for b in backend.list_worker_heartbeats()
                if b.timestamp >= cutoff and not b.extras.get("stopped")
            )
    except Exception as exc:  # noqa: BLE001
        problems.append(f"backend: {exc}")
    if not problems and fresh == 0:
        problems.append(f"no worker heartbeat in the last {max_age:g}s")
    if settings.as_json:
        print_json({"healthy": not problems, "fresh_workers": fresh, "problems": problems})
    elif problems:
        print("unhealthy: " + "; ".join(problems), file=sys.stderr)
    else:
        print(f"healthy: {fresh} worker(s) with a fresh heartbeat")
    raise typer.Exit(1 if problems else 0)


main_entry = entry(cli, "stem")

if __name__ == "__main__":
    main_entry()
