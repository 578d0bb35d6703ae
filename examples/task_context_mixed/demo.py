"""The main job: the example end to end.

``python -m task_context_mixed.demo [--fail] [--overwrite]``

Starts the example's worker in its own process, runs the producer, waits until every
task the run created has settled, prints a table read from the result backend, and
stops the worker with SIGTERM (a warm shutdown). Without STEM_SQLITE_* set, the two
files go to a new temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from stem_sqlite import SqliteBroker, SqliteResultBackend, TaskStatus, resolve_paths

from . import MIXED_QUEUE, PATH_BASE

TIMEOUT = 45.0


def _wait(what: str, check: Any, timeout: float = TIMEOUT, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(every)


def run_tracked(backend: SqliteResultBackend, roots: list[str]) -> dict[str, TaskStatus]:
    """Every task of the run: the roots and all their descendants (by stem.rootTaskId)."""
    found: dict[str, TaskStatus] = {}
    for root in roots:
        status = backend.get(root)
        if status is not None:
            found[root] = status
        page = backend.list_task_statuses(meta={"stem.rootTaskId": root}, limit=1000)
        for record in page.items:
            found[record.status.id] = record.status
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = dict(os.environ)
    if not any(
        env.get(k, "").strip()
        for k in ("STEM_SQLITE_BROKER_PATH", "STEM_SQLITE_BACKEND_PATH", "STEM_SQLITE_PATH")
    ):
        env["STEM_SQLITE_PATH"] = tempfile.mkdtemp(prefix="task-context-mixed-") + os.sep
    paths = resolve_paths(env, default_base=PATH_BASE)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(
        f"broker  {os.path.abspath(paths.broker)}\nbackend {os.path.abspath(paths.backend)}"
    )

    worker = subprocess.Popen([sys.executable, "-m", "task_context_mixed.worker"], env=env)
    try:
        return _run(args, env, paths, worker, console)
    finally:
        if worker.poll() is None:
            worker.kill()


def _run(args: list[str], env: dict[str, str], paths: Any, worker: Any, console: Console) -> int:
    worker_name = env.get("WORKER_NAME", "").strip() or "task-context-worker"
    _wait("the backend file", lambda: Path(paths.backend).exists())
    backend = SqliteResultBackend.open(paths.backend, cleanup_interval=0)
    _wait("the worker to start", lambda: backend.get_worker_heartbeat(worker_name))

    produced = subprocess.run(
        [sys.executable, "-m", "task_context_mixed.enqueue", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    print(produced.stdout, end="")
    parent = re.search(r"id=(\S+)", produced.stdout)
    assert parent, produced.stdout
    parent_id = parent.group(1)

    parent_status = _wait(
        "demo.inline_parent", lambda: (s := backend.get(parent_id)) and s.state.is_terminal and s
    )
    roots = [parent_id]
    if isinstance(parent_status.payload, dict) and parent_status.payload.get("inline"):
        roots.append(parent_status.payload["inline"])  # enqueued without lineage
    broker = SqliteBroker.open(paths.broker, sweeper_interval=0)

    def settled() -> dict[str, TaskStatus] | None:
        if (
            broker.pending_count(MIXED_QUEUE)
            + broker.delayed_count(MIXED_QUEUE)
            + broker.inflight_count(MIXED_QUEUE)
        ):
            return None
        tasks = run_tracked(backend, roots)
        return tasks if all(s.state.is_terminal for s in tasks.values()) else None

    tasks = _wait("every task of the run to settle", settled)
    table = Table(title=f"task_context_mixed run ({len(tasks)} tasks)")
    for column in ("id", "name", "state", "attempt", "result"):
        table.add_column(column, overflow="fold")
    for status in sorted(tasks.values(), key=lambda s: s.meta.get("startedAt") or ""):
        result = (
            status.payload
            if status.error is None
            else f"{status.error.type}: {status.error.message}"
        )
        text = result if isinstance(result, str) else json.dumps(result)
        text = text if len(text) <= 60 else text[:57] + "..."
        table.add_row(
            status.id,
            str(status.meta.get("task") or status.meta.get("stem.task")),
            status.state.value,
            str(status.attempt),
            text,
        )
    console.print(table)

    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=30)
    broker.close()
    backend.close()
    console.print(f"worker stopped (exit code {code})")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
