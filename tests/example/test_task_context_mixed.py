"""The task_context_mixed example end to end, through the console scripts.

A real ``stem-worker`` process loads the example app; the example's own producer
enqueues; the final state of every task the run creates is read from the backend.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from task_context_mixed import MIXED_QUEUE
from task_context_mixed.demo import run_tracked

from stem_sqlite import SqliteBroker, SqliteResultBackend, TaskState, TaskStatus
from tests.conftest import wait_for

BIN = Path(sys.executable).parent


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    for key in ("STEM_SQLITE_BROKER_PATH", "STEM_SQLITE_BACKEND_PATH", "STEM_APP"):
        env.pop(key, None)
    env["STEM_SQLITE_PATH"] = str(tmp_path) + os.sep  # the example's own names inside
    env["WORKER_NAME"] = "task-context-worker"
    worker = subprocess.Popen(
        [
            str(BIN / "stem-worker"),
            "--app",
            "task_context_mixed.tasks",
            "-Q",
            MIXED_QUEUE,
            "-c",
            "2",
            "--prefetch-multiplier",
            "1",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield env
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0, output
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def run_example(env: dict[str, str], *flags: str) -> tuple[str, dict[str, TaskStatus], str]:
    """Run the example's producer and wait for the whole run to settle."""
    folder = Path(env["STEM_SQLITE_PATH"])
    produced = subprocess.run(
        [sys.executable, "-m", "task_context_mixed.enqueue", *flags],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr
    parent_id = re.search(r"id=(\S+)", produced.stdout).group(1)  # type: ignore[union-attr]
    # The producer never writes the backend.
    broker_file = folder / "task_context_mixed_broker.sqlite"
    backend_file = folder / "task_context_mixed_backend.sqlite"
    assert broker_file.exists()
    backend = SqliteResultBackend.open(backend_file, cleanup_interval=0)
    broker = SqliteBroker.open(broker_file, sweeper_interval=0)
    try:
        parent = wait_for(
            lambda: (s := backend.get(parent_id)) and s.state.is_terminal and s, timeout=30
        )
        roots = [parent_id, parent.payload["inline"]]

        def settled() -> dict[str, TaskStatus] | None:
            busy = sum(
                f(MIXED_QUEUE)
                for f in (broker.pending_count, broker.delayed_count, broker.inflight_count)
            )
            tasks = run_tracked(backend, roots)
            return tasks if not busy and all(t.state.is_terminal for t in tasks.values()) else None

        return parent_id, wait_for(settled, timeout=40, interval=0.05), produced.stdout
    finally:
        broker.close()
        backend.close()


def by_name(tasks: dict[str, TaskStatus]) -> dict[str, list[TaskStatus]]:
    grouped: dict[str, list[TaskStatus]] = {}
    for status in tasks.values():
        grouped.setdefault(status.meta["task"], []).append(status)
    return grouped


def test_normal_run(deployment: dict[str, str]) -> None:
    parent_id, tasks, _ = run_example(deployment)
    names = by_name(tasks)
    assert Counter({k: len(v) for k, v in names.items()}) == Counter(
        {
            "demo.inline_parent": 1,
            "demo.inline_entrypoint": 1,
            "demo.isolate_child": 1,
            "demo.flaky": 1,
            "demo.on_success": 1,
            "demo.audit": 3,
        }
    )
    assert all(s.state is TaskState.SUCCEEDED for s in tasks.values())
    parent = names["demo.inline_parent"][0]
    flaky = names["demo.flaky"][0]
    assert flaky.id == f"flaky-{parent.payload['flaky'].removeprefix('flaky-')}"
    assert flaky.attempt == 1 and flaky.payload["status"] == "ok"  # retried once, then ok
    # Full apply_async surface: informational options and lineage in the status meta.
    assert flaky.meta["stem.exchange"] == "demo-exchange"
    assert flaky.meta["stem.routingKey"] == "demo.flaky"
    assert flaky.meta["stem.shadow"] == "demo.flaky" and flaky.meta["stem.replyTo"] == "demo.reply"
    assert flaky.meta["stem.parentTaskId"] == parent_id
    # ignore_result: the inline entrypoint's "inline-ok" is not stored.
    inline = names["demo.inline_entrypoint"][0]
    assert inline.payload is None
    # add_to_parent=False: no lineage; add_to_parent=True: lineage.
    assert "stem.parentTaskId" not in inline.meta
    isolate = names["demo.isolate_child"][0]
    assert isolate.meta["stem.parentTaskId"] == parent_id
    assert isolate.payload == "isolate-ok" and "stem.expiresAt" in isolate.meta
    # The link callback got exactly its own signature's arguments and lineage to flaky.
    link = names["demo.on_success"][0]
    assert link.meta["stem.parentTaskId"] == flaky.id
    # An audit enqueued from the process-pool child carries its header-free meta origin.
    assert any(a.meta.get("origin") == "isolate-child" for a in names["demo.audit"])


def test_fail_runs_link_error(deployment: dict[str, str]) -> None:
    _, tasks, _ = run_example(deployment, "--fail")
    names = by_name(tasks)
    flaky = names["demo.flaky"][0]
    assert flaky.state is TaskState.FAILED
    assert flaky.attempt == 2  # the first run and both retries failed
    assert flaky.error is not None and "Forced failure" in flaky.error.message
    assert "demo.on_success" not in names
    on_error = names["demo.on_error"][0]
    assert on_error.state is TaskState.SUCCEEDED
    assert on_error.meta["stem.parentTaskId"] == flaky.id
    others = [s for s in tasks.values() if s.meta["task"] != "demo.flaky"]
    assert all(s.state is TaskState.SUCCEEDED for s in others)


def test_overwrite_reuses_the_task_id(deployment: dict[str, str]) -> None:
    parent_id, tasks, output = run_example(deployment, "--overwrite")
    assert parent_id == "task-context-mixed"
    parents = by_name(tasks)["demo.inline_parent"]
    assert len(parents) == 1 and parents[0].state is TaskState.SUCCEEDED
    assert len(by_name(tasks)["demo.flaky"]) == 1
    flaky = by_name(tasks)["demo.flaky"][0]
    if "Overwrote task id=task-context-mixed" in output:
        # The second enqueue replaced the pending first one in place: only it ran.
        assert flaky.id.endswith("_overwrite")
    else:
        # A worker had already taken the first one; its lease was not broken.
        assert "Not overwritten" in output
        assert not flaky.id.endswith("_overwrite")
