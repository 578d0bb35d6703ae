"""Task bodies for the runtime tests.

They are module-level functions so that a process-pool child can import them by
name; each test registers them on its own app (``app.task(name=..., pool=...)(fn)``).
A pool process shares no memory with the test, so every body reports what it saw
through files: one JSON object per line, appended (small appends are atomic).
"""

from __future__ import annotations

import builtins
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

from stem_sqlite import SoftTimeLimitExceeded, TaskContext, TaskRevoked


def append(path: str, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def wait_for_file(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def context_record(ctx: TaskContext, label: str) -> dict[str, Any]:
    return {
        "label": label,
        "id": ctx.id,
        "name": ctx.name,
        "queue": ctx.queue,
        "attempt": ctx.attempt,
        "headers": ctx.headers,
        "meta": ctx.meta,
        "args": list(ctx.args),
        "kwargs": ctx.kwargs,
        "pid": os.getpid(),
    }


# -- simple bodies ----------


def add(x: int, y: int) -> int:
    return x + y


def record(path: str, label: str) -> str:
    """Note that it ran (with when and where) and return its label."""
    append(path, {"label": label, "time": time.time(), "pid": os.getpid()})
    return label


def fail(path: str, exc_name: str = "ValueError", message: str = "boom") -> None:
    """Note the run, then raise the built-in exception ``exc_name``."""
    append(path, {"event": "run", "time": time.time(), "pid": os.getpid()})
    raise getattr(builtins, exc_name)(message)


def returns_datetime() -> Any:
    """A value JSON cannot hold."""
    return datetime(2024, 5, 17, 12, 0, tzinfo=UTC)


def interval(path: str, label: str, seconds: float) -> str:
    """Hold a slot for ``seconds``; record the monotonic start and end of the body."""
    start = time.monotonic()
    time.sleep(seconds)
    end = time.monotonic()
    append(path, {"label": label, "start": start, "end": end})
    return label


def sleeper(path: str, seconds: float) -> float:
    append(path, {"event": "start", "time": time.time(), "pid": os.getpid()})
    time.sleep(seconds)
    append(path, {"event": "end", "time": time.time(), "pid": os.getpid()})
    return seconds


def spin(path: str) -> None:
    """A CPU-bound loop that never ends by itself."""
    append(path, {"event": "spin", "pid": os.getpid()})
    while True:
        pass


def soft_limited(path: str) -> str:
    """Wait up to 10 s; clean up and return when the soft time limit interrupts."""
    append(path, {"event": "start", "time": time.time()})
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        append(path, {"event": "soft-limit", "time": time.time()})
        return "cleaned up"
    return "never interrupted"


# -- bound bodies (bind=True: the TaskContext comes first) ----------


def describe(ctx: TaskContext, path: str, label: str, **extra: Any) -> str:
    """Record everything the context shows."""
    append(path, context_record(ctx, label))
    return label


def family(ctx: TaskContext, path: str, label: str, depth: int) -> str:
    """Record the context; above depth 0 spawn a child (with lineage) and an orphan
    (``add_to_parent=False``), and record the ids the context returned."""
    entry = context_record(ctx, label)
    if depth > 0:
        entry["child_id"] = ctx.enqueue(ctx.name, args=[path, label + ".child", depth - 1])
        entry["orphan_id"] = ctx.spawn(
            ctx.name, args=[path, label + ".orphan", 0], add_to_parent=False
        )
    append(path, entry)
    return label


def retry_once(ctx: TaskContext, path: str, countdown: float) -> int:
    """Ask for a retry on the first attempt; succeed on the next one."""
    append(path, {"attempt": ctx.attempt, "time": time.time()})
    if ctx.attempt == 0:
        ctx.retry(countdown=countdown)
    return ctx.attempt


def retry_always(ctx: TaskContext, path: str, max_retries: int | None = None) -> None:
    append(path, {"attempt": ctx.attempt, "time": time.time()})
    if max_retries is None:
        ctx.retry(countdown=0.01)
    ctx.retry(countdown=0.01, max_retries=max_retries)


def progress_then_wait(ctx: TaskContext, path: str, gate: str) -> str:
    """Report progress and renew the lease, then wait for the gate file."""
    ctx.progress(42, {"step": "half"})
    append(path, {"heartbeat": ctx.heartbeat(), "extend_lease": ctx.extend_lease(5)})
    wait_for_file(gate)
    return "done"


def revocable(ctx: TaskContext, path: str, gate: str) -> str:
    """Wait for the gate; on TaskRevoked note it (and ctx.is_revoked()) and give up."""
    append(path, {"event": "start", "pid": os.getpid()})
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                raise TimeoutError(gate)
            time.sleep(0.01)
    except TaskRevoked:
        append(path, {"event": "revoked", "is_revoked": ctx.is_revoked()})
        raise
    append(path, {"event": "end", "is_revoked": ctx.is_revoked()})
    return "finished"


# -- bodies that ignore being asked to stop ----------


def _wait_ignoring_revoke(path: str, gate: str, run: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            while not os.path.exists(gate):
                if time.monotonic() > deadline:
                    raise TimeoutError(gate)
                time.sleep(0.01)
            return
        except TaskRevoked:
            append(path, {"event": "revoke-ignored", "run": run})


def stubborn_gated(path: str, gate_dir: str) -> int:
    """Run number n waits for ``gate_dir/gate.<n>`` (ignoring TaskRevoked), returns n."""
    run = 1 + sum(1 for item in read(path) if item.get("event") == "start")
    append(path, {"event": "start", "run": run, "pid": os.getpid()})
    _wait_ignoring_revoke(path, os.path.join(gate_dir, f"gate.{run}"), run)
    append(path, {"event": "end", "run": run})
    return run


def busy(path: str, seconds: float) -> str:
    """Pure-Python work for up to ``seconds`` (no C call to block an interruption)."""
    append(path, {"event": "start", "time": time.time()})
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        count += 1
    append(path, {"event": "end", "time": time.time()})
    return "ran to the end"


def gated(gate: str) -> str:
    """Wait for the gate file (no progress reports: only the worker stores `running`)."""
    wait_for_file(gate)
    return "done"
