"""A killed worker loses nothing; bad input is dead-lettered and the worker goes on
(contract W-1, W-11, X-22); worker heartbeats are stored."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stem_sqlite import (
    DatabaseBusy,
    Envelope,
    SqliteResultBackend,
    Stem,
    StemError,
    TaskState,
)
from tests.conftest import wait_for
from tests.runtime import tasks
from tests.runtime.conftest import AppFactory, run_burst, running

REPO = Path(__file__).resolve().parents[2]

# argv: broker path, backend path. Runs a thread-pool worker until killed.
CRASHING_WORKER = r"""
import sys
from stem_sqlite import SqliteBroker, SqliteResultBackend, Stem, Worker
from tests.runtime import tasks

broker = SqliteBroker.open(sys.argv[1], default_visibility_timeout=1, poll_interval=0.02)
backend = SqliteResultBackend.open(sys.argv[2], poll_interval=0.02)
app = Stem(broker=broker, backend=backend)
app.task(name="rt.stubborn")(tasks.stubborn_gated)
app.task(name="rt.record")(tasks.record)
Worker(app, concurrency=1, name="doomed", heartbeat_interval=0.2).run()
"""


def test_sigkilled_worker_loses_nothing(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app(visibility=1)
    stubborn = app.task(name="rt.stubborn")(tasks.stubborn_gated)
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    others_log = str(tmp_path / "others.jsonl")
    gates = tmp_path / "gates"
    gates.mkdir()
    victim = stubborn.delay(log, str(gates))
    others = [record.delay(others_log, f"other-{i}") for i in range(3)]

    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CRASHING_WORKER,
            str(make_app.broker_path),
            str(make_app.backend_path),
        ],
        cwd=REPO,
    )
    try:
        wait_for(lambda: tasks.read(log), timeout=20, message="the worker never started the task")
        # `running` is stored with the worker's next status flush, within milliseconds.
        wait_for(lambda: victim.status().state is TaskState.RUNNING, timeout=5)
        assert app.broker.inflight_count("default") == 1
        process.kill()  # SIGKILL, mid-task
        assert process.wait(10) < 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    (gates / "gate.2").touch()  # the next run may finish (the first one is dead)
    with running(app, name="survivor"):
        final = victim.wait(timeout=20)
        assert sorted(result.get(timeout=10) for result in others) == [
            "other-0",
            "other-1",
            "other-2",
        ]

    assert final.state is TaskState.SUCCEEDED
    assert final.payload == 2
    events = tasks.read(log)
    assert [(e["event"], e["run"]) for e in events] == [("start", 1), ("start", 2), ("end", 2)]
    assert events[0]["pid"] == process.pid
    assert app.broker.list_dead_letters("default").entries == []
    for count in (app.broker.pending_count, app.broker.inflight_count, app.broker.delayed_count):
        assert count("default") == 0


def test_unregistered_task_in_the_queue_is_dead_lettered(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = make_app()
    record = app.task(name="rt.record")(tasks.record)
    stranger = Envelope("rt.no_such_task", args=[1])
    app.broker.publish(stranger)
    after = record.delay(str(tmp_path / "after.jsonl"), "after")

    run_burst(app)

    entry = app.broker.get_dead_letter("default", stranger.id)
    assert entry is not None
    assert entry.reason == "unregistered-task"
    assert entry.envelope.name == "rt.no_such_task"
    assert after.get(timeout=1) == "after"
    assert [(e.envelope.id, e.reason) for e in app.broker.list_dead_letters("default").entries] == [
        (stranger.id, "unregistered-task")
    ]


@pytest.mark.parametrize(
    "damage",
    ['{"id": "x", "name": ', '{"queue": "default", "args": []}', "[1, 2]", '{"name": 7}'],
    ids=["truncated-json", "no-name", "not-an-object", "name-not-text"],
)
def test_malformed_job_row_is_dead_lettered_and_the_worker_goes_on(
    make_app: AppFactory, tmp_path: Path, damage: str
) -> None:
    app = make_app()
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    broken = record.apply_async(args=[log, "broken"], priority=5)  # claimed first
    after = record.delay(log, "after")
    with sqlite3.connect(make_app.broker_path) as conn:
        changed = conn.execute(
            "UPDATE stem_jobs SET envelope = ? WHERE id = ?", (damage, broken.id)
        ).rowcount
    assert changed == 1

    run_burst(app)

    assert after.get(timeout=1) == "after"
    assert [r["label"] for r in tasks.read(log)] == ["after"]
    entry = app.broker.get_dead_letter("default", broken.id)
    assert entry is not None, "the malformed job was not dead-lettered"
    assert entry.reason  # a reason says why
    assert app.broker.pending_count("default") + app.broker.inflight_count("default") == 0


class FlakyBackend:
    """A result backend whose first ``failures`` batched status writes (the worker's
    `running` statuses and plain results) fail as a broken disk would."""

    def __init__(
        self, inner: SqliteResultBackend, failures: int, error: type[StemError] = StemError
    ) -> None:
        self._inner = inner
        self.failures = failures
        self._error = error

    def set_many(self, writes: Any) -> list[bool]:
        if self.failures > 0:
            self.failures -= 1
            raise self._error("injected: disk I/O error")
        return self._inner.set_many(writes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _flaky_app(
    make_app: AppFactory, failures: int, error: type[StemError] = StemError
) -> tuple[Stem, FlakyBackend]:
    plain = make_app()
    flaky = FlakyBackend(plain.backend, failures, error)  # type: ignore[arg-type]
    return Stem(broker=plain.broker, backend=flaky), flaky  # type: ignore[arg-type]


def test_failed_status_write_releases_the_job_for_another_try(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """X-22: a result that cannot be stored never leaks the delivery, and is never acked:
    the job goes back and runs again (at least once)."""
    app, flaky = _flaky_app(make_app, failures=1)
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    result = record.delay(log, "once")

    run_burst(app, timeout=20)  # a leaked delivery would keep burst (and warm shutdown) waiting

    assert flaky.failures == 0
    assert result.status().state is TaskState.SUCCEEDED
    labels = [r["label"] for r in tasks.read(log)]
    # Twice when the failed flush held the result; once when it held only `running`.
    assert labels in (["once"], ["once", "once"]), labels
    assert app.broker.list_dead_letters("default").entries == []


def test_busy_database_delays_a_status_write_without_releasing_the_job(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """A busy database changed nothing: the worker tries the same flush again (it holds
    the lease meanwhile), so the task runs once."""
    app, flaky = _flaky_app(make_app, failures=2, error=DatabaseBusy)
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    result = record.delay(log, "once")

    run_burst(app, timeout=20)

    assert flaky.failures == 0
    assert result.status().state is TaskState.SUCCEEDED
    assert [r["label"] for r in tasks.read(log)] == ["once"]


def test_job_whose_status_can_never_be_stored_ends_in_the_dead_letter_store(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """X-22: a job whose outcome can never be stored is dead-lettered with a reason after
    the delivery limit, not looped forever, and its status says it failed."""
    app, _ = _flaky_app(make_app, failures=1000)
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    poison = record.delay(log, "poison")

    run_burst(app, timeout=30)

    entry = app.broker.get_dead_letter("default", poison.id)
    assert entry is not None and entry.reason == "delivery-limit-exceeded"
    assert poison.status().state is TaskState.FAILED
    assert 1 <= len(tasks.read(log)) <= 5  # one run per delivery, up to the limit


def test_worker_heartbeats_are_stored(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    progress = app.task(name="rt.progress", bind=True)(tasks.progress_then_wait)
    gate = tmp_path / "go"
    with running(
        app, queues=["default", "other"], concurrency=2, name="hb-worker", heartbeat_interval=0.1
    ):
        first = wait_for(lambda: app.backend.get_worker_heartbeat("hb-worker"), timeout=5)
        assert [hb.worker_id for hb in app.backend.list_worker_heartbeats()] == ["hb-worker"]
        assert sorted(q["name"] for q in first.queues) == ["default", "other"]
        assert first.concurrency == 2
        later = wait_for(
            lambda: (
                (hb := app.backend.get_worker_heartbeat("hb-worker"))
                and hb.timestamp > first.timestamp
                and hb
            ),
            timeout=5,
            message="the heartbeat was not refreshed every heartbeat_interval",
        )
        assert later.worker_id == "hb-worker"

        result = progress.delay(str(tmp_path / "lease.jsonl"), str(gate))
        busy = wait_for(
            lambda: (
                (hb := app.backend.get_worker_heartbeat("hb-worker")) and hb.inflight == 1 and hb
            ),
            timeout=5,
        )
        assert {q["name"]: q["inflight"] for q in busy.queues} == {"default": 1, "other": 0}
        gate.touch()
        assert result.get(timeout=10) == "done"


def test_job_whose_arguments_do_not_fit_the_function_fails_and_the_worker_goes_on(
    make_app: AppFactory,
) -> None:
    app = make_app()
    add = app.task(name="rt.add")(tasks.add)
    misfit = Envelope("rt.add", args=[1], kwargs={"z": 2})
    app.broker.publish(misfit)
    after = add.delay(1, 2)
    run_burst(app)
    status = app.backend.get(misfit.id)
    assert status is not None and status.state is TaskState.FAILED
    assert status.error is not None and status.error.type == "TypeError"
    assert after.get(timeout=1) == 3


def _crash_while_running(app: Stem, queue: str = "default") -> None:
    """Do to the queue's next job what a worker killed mid-task leaves behind: a lease
    that nobody settles, and the `running` status that worker wrote under that lease."""
    consumer = app.broker.consume(queue)
    delivery = consumer.receive(timeout=5)
    assert delivery is not None
    envelope = delivery.envelope
    app.backend.set(
        envelope.id,
        TaskState.RUNNING,
        attempt=envelope.attempt,
        meta={**envelope.meta, "queue": queue, "worker": "killed"},
        owner=delivery.receipt,
    )
    wait_for(lambda: app.broker.pending_count(queue) == 1, timeout=5)  # the lease lapsed
    consumer.close()


def test_fast_job_redelivered_after_a_crash_takes_its_status_over(make_app: AppFactory) -> None:
    """A task shorter than a status flush writes its result without a separate
    `running`; that result must still take over the record the dead lease owns."""
    app = make_app(visibility=0.2)
    add = app.task(name="rt.add")(tasks.add)
    result = add.delay(2, 3)
    _crash_while_running(app)

    run_burst(app)

    status = result.status()
    assert status is not None and status.state is TaskState.SUCCEEDED, status
    assert status.payload == 5 and status.meta.get("worker") != "killed"


def test_job_that_expired_while_its_worker_was_dead_ends_cancelled(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """S-6 / W-6: expiry is checked at every receipt, also at a redelivery after a crash."""
    app = make_app(visibility=0.2)
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    result = record.apply_async(args=[log, "late"], expires=0.1)
    _crash_while_running(app)

    run_burst(app)

    assert tasks.read(log) == []
    status = result.status()
    assert status is not None
    assert status.state is TaskState.CANCELLED, f"stuck in {status.state}"
    assert status.error is not None and status.error.type == "TaskExpired"


def test_job_whose_workers_keep_dying_ends_failed(make_app: AppFactory, tmp_path: Path) -> None:
    """X-22: past the delivery limit a job is failed and dead-lettered, and its status
    says so (not the `running` left by the worker that died)."""
    app = make_app(visibility=0.2)
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    result = record.delay(log, "cursed")
    _crash_while_running(app)

    run_burst(app, max_deliveries=1)

    assert tasks.read(log) == []
    entry = app.broker.get_dead_letter("default", result.id)
    assert entry is not None and entry.reason
    status = result.status()
    assert status is not None
    assert status.state is TaskState.FAILED, f"stuck in {status.state}"
