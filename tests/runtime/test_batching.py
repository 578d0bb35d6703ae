"""Group commit of statuses and acks: batched for real, in the right order, never lost
at shutdown, and `running` still visible for a task that takes a while."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from stem_sqlite import Stem, TaskState
from stem_sqlite.worker.leases import HeldLease
from tests.conftest import wait_for
from tests.runtime import tasks
from tests.runtime.conftest import AppFactory, run_burst, running


class CountingBackend:
    """A result backend that counts the worker's batched writes and checks, at every
    ack, that the acked job's result is already stored."""

    def __init__(self, inner: Any, broker: Any) -> None:
        self._inner = inner
        self.batches: list[int] = []
        self.acked_before_stored: list[str] = []
        self.acks = 0
        self._lock = threading.Lock()
        outer = self
        real_ack_many = broker.ack_many
        real_ack_and_claim = broker._ack_and_claim  # what a consumer's ack_and_refill runs

        def check(deliveries: Any) -> None:
            for delivery in deliveries:
                status = inner.get(delivery.envelope.id)
                if status is None or status.state is not TaskState.SUCCEEDED:
                    outer.acked_before_stored.append(delivery.envelope.id)
            outer.acks += len(deliveries)

        def checked_ack_many(deliveries: Any) -> list[bool]:
            check(deliveries)
            return list(real_ack_many(deliveries))

        def checked_ack_and_claim(deliveries: Any, consumer: Any, n: int) -> Any:
            check(deliveries)
            return real_ack_and_claim(deliveries, consumer, n)

        broker.ack_many = checked_ack_many
        broker._ack_and_claim = checked_ack_and_claim

    def set_many(self, writes: Any) -> list[bool]:
        with self._lock:
            self.batches.append(len(writes))
        return list(self._inner.set_many(writes))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def counting_app(make_app: AppFactory) -> tuple[Stem, CountingBackend]:
    plain = make_app()
    counting = CountingBackend(plain.backend, plain.broker)
    return Stem(broker=plain.broker, backend=counting), counting  # type: ignore[arg-type]


def test_short_tasks_share_transactions_and_are_acked_only_once_stored(
    make_app: AppFactory,
) -> None:
    app, counting = counting_app(make_app)
    add = app.task(name="rt.add")(tasks.add)
    results = [add.delay(i, i) for i in range(300)]

    run_burst(app, concurrency=2, prefetch_multiplier=32)

    assert [r.get(timeout=1) for r in results] == [2 * i for i in range(300)]
    assert app.broker.pending_count("default") + app.broker.inflight_count("default") == 0
    assert counting.acked_before_stored == []
    assert counting.acks >= 300  # every ack went through the check
    # Every result is in some batch; with 64 jobs claimed at a time most batches hold many.
    assert sum(counting.batches) >= 300
    assert len(counting.batches) < 150, counting.batches


def test_a_task_that_takes_a_while_shows_running_until_it_ends(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = make_app()
    gated = app.task(name="rt.gated")(tasks.gated)
    gate = tmp_path / "gate"
    result = gated.delay(str(gate))
    with running(app):
        # Stored by the worker's next flush, while the body still runs.
        wait_for(lambda: result.state is TaskState.RUNNING, timeout=5)
        gate.touch()
        assert result.get(timeout=10) == "done"
    assert result.state is TaskState.SUCCEEDED


def test_warm_shutdown_stores_every_finished_result(make_app: AppFactory) -> None:
    app = make_app()
    add = app.task(name="rt.add")(tasks.add)
    results = [add.delay(i, 1) for i in range(200)]
    with running(app, concurrency=2, prefetch_multiplier=64) as worker:
        wait_for(lambda: worker.counts["succeeded"] >= 50, timeout=10)
    # Whatever finished was stored and acked; whatever did not went back to the queue.
    done = [r for r in results if r.state is TaskState.SUCCEEDED]
    assert len(done) >= 50
    assert all(r.get(timeout=0) == i + 1 for i, r in enumerate(results) if r in done)
    left = app.broker.pending_count("default") + app.broker.inflight_count("default")
    assert left == len(results) - len(done)


def test_a_job_whose_lease_ended_before_it_started_is_not_run(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """What a worker resumed after a long pause meets: its delivery's lease is over
    (another worker may hold the job now), so the body must not start."""
    app = make_app(visibility=0.2)
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    record.delay(log, "late")
    consumer = app.broker.consume("default")
    delivery = consumer.receive(timeout=5)
    assert delivery is not None
    wait_for(lambda: app.broker.pending_count("default") == 1, timeout=5)  # the lease ended
    with running(app, queues=["elsewhere"]) as worker:  # takes nothing from "default"
        assert worker.scheduler is not None
        lease = HeldLease(delivery, app.broker, worker.scheduler)  # never renewed
        worker._pipeline.handle(delivery, lease)
    assert tasks.read(log) == []
    assert app.broker.pending_count("default") == 1  # still there for a live worker
    consumer.close()


def lone_surrogate() -> str:
    """A result that JSON can encode but no UTF-8 file can hold."""
    return "bad \ud800 text"


def test_a_result_that_cannot_be_stored_fails_alone_and_its_batch_mates_run_once(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """Found by hand: the whole batch of statuses was refused, so every task that shared
    it was released and ran again, up to the delivery limit, and the bad one ended as a
    lost worker. Its result is now checked when the task returns."""
    app = make_app()
    record = app.task(name="rt.record")(tasks.record)
    bad = app.task(name="rt.lone_surrogate")(lone_surrogate)
    path = str(tmp_path / "runs.jsonl")
    goods = [record.delay(path, f"r{i}") for i in range(5)]
    broken = bad.delay()
    goods += [record.delay(path, f"r{i}") for i in range(5, 10)]
    run_burst(app, prefetch_multiplier=16)
    labels = sorted(r["label"] for r in tasks.read(path))
    assert labels == sorted(f"r{i}" for i in range(10)), "each good task runs once"
    assert all(result.get(timeout=5) for result in goods)
    status = app.backend.get(broken.id)
    assert status is not None and status.state is TaskState.FAILED
    assert status.error is not None and status.error.type == "InvalidPayload"
    assert "lone surrogate" in status.error.message and "rt.lone_surrogate" in status.error.message
