"""The engine contracts: what a broker and a result backend must do.

The runtime (app, worker, canvas, CLI) talks only to these protocols, so a
PostgreSQL or Redis engine that implements them runs the same tasks unchanged.
The SQLite engine in :mod:`stem_sqlite.sqlite` is the first implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from .model import (
    DeadLetterEntry,
    DeadLetterPage,
    Delivery,
    Envelope,
    GroupDescriptor,
    GroupStatus,
    ReplayResult,
    StatusWrite,
    TaskError,
    TaskState,
    TaskStatus,
    TaskStatusPage,
    WorkerHeartbeat,
)
from .timeutil import Duration


@runtime_checkable
class Consumer(Protocol):
    """A lease-taking reader of one queue that never holds more than ``prefetch``
    unsettled deliveries."""

    def receive(
        self, timeout: Duration | None = None, *, limit: int | None = None
    ) -> Delivery | None:
        """The next delivery, waiting up to ``timeout`` seconds (forever when None);
        ``limit`` caps how many jobs this call may claim."""
        ...

    def __iter__(self) -> Iterator[Delivery]: ...

    @property
    def held(self) -> int:
        """Deliveries claimed and not yet settled."""
        ...

    def close(self) -> None:
        """Stop consuming and release jobs claimed but not yet handed out."""
        ...

    def __enter__(self) -> Consumer: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Broker(Protocol):
    """A durable queue with leases, priorities, delays and dead letters."""

    supports_delayed: bool
    supports_priority: bool

    def publish(
        self, envelope: Envelope, *, queue: str | None = None, priority: int | None = None
    ) -> None: ...

    def publish_many(self, envelopes: Iterable[Envelope]) -> None: ...

    def publish_copies(self, envelope: Envelope, count: int) -> list[str]: ...

    def consume(
        self, queue: str | Sequence[str], *, prefetch: int = 1, consumer_name: str | None = None
    ) -> Consumer: ...

    def ack(self, delivery: Delivery) -> bool: ...

    def change_mark(self) -> object:
        """What the broker has seen so far. Take it before looking for jobs, then pass
        it to :meth:`wait_for_change`, so that nothing published in between is missed."""
        ...

    def wait_for_change(self, mark: object, timeout: Duration) -> bool:
        """Block until the broker may have changed after ``mark`` (by any process, on
        any queue) or ``timeout`` seconds pass; True on a change. It may return False
        sooner (a delayed job falls due without a change). How a consumer of several
        queues waits for all of them at once."""
        ...

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]: ...

    def nack(self, delivery: Delivery, *, requeue: bool = True) -> bool: ...

    def dead_letter(
        self, delivery: Delivery, *, reason: str | None = None, meta: dict[str, Any] | None = None
    ) -> bool: ...

    def extend_lease(self, delivery: Delivery, by: Duration) -> bool: ...

    def reschedule(self, delivery: Delivery, envelope: Envelope) -> bool: ...

    def purge(self, queue: str) -> int: ...

    def pending_count(self, queue: str) -> int: ...

    def inflight_count(self, queue: str) -> int: ...

    def delayed_count(self, queue: str) -> int: ...

    def dead_letter_count(self, queue: str) -> int: ...

    def queues(self) -> list[str]: ...

    def list_dead_letters(
        self, queue: str, *, limit: int = 50, offset: int = 0
    ) -> DeadLetterPage: ...

    def get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None: ...

    def replay_dead_letters(
        self,
        queue: str,
        *,
        limit: int = 50,
        since: datetime | None = None,
        delay: Duration | None = None,
        dry_run: bool = False,
    ) -> ReplayResult: ...

    def purge_dead_letters(
        self, queue: str, *, since: datetime | None = None, limit: int | None = None
    ) -> int: ...

    def run_maintenance(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ResultBackend(Protocol):
    """Task states with TTLs, groups and chords, and worker heartbeats."""

    def set(
        self,
        task_id: str,
        state: TaskState | str,
        *,
        payload: Any = None,
        error: TaskError | None = None,
        attempt: int = 0,
        meta: dict[str, Any] | None = None,
        ttl: Duration | None = None,
        owner: str | None = None,
        take_over: bool = False,
        epoch: int | None = None,
    ) -> bool: ...

    def set_many(self, writes: Sequence[StatusWrite]) -> list[bool]: ...

    def get(self, task_id: str) -> TaskStatus | None: ...

    def watch(self, task_id: str, *, timeout: Duration | None = None) -> Iterator[TaskStatus]: ...

    def wait(self, task_id: str, *, timeout: Duration | None = None) -> TaskStatus: ...

    def list_task_statuses(
        self,
        *,
        state: TaskState | str | None = None,
        queue: str | None = None,
        meta: dict[str, Any] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> TaskStatusPage: ...

    def count_task_statuses(
        self, *, state: TaskState | str | None = None, queue: str | None = None
    ) -> int: ...

    def expire(self, task_id: str, ttl: Duration) -> None: ...

    def set_worker_heartbeat(self, heartbeat: WorkerHeartbeat) -> None: ...

    def get_worker_heartbeat(self, worker_id: str) -> WorkerHeartbeat | None: ...

    def list_worker_heartbeats(self) -> list[WorkerHeartbeat]: ...

    def init_group(self, descriptor: GroupDescriptor) -> None: ...

    def add_group_result(self, group_id: str, status: TaskStatus) -> GroupStatus | None: ...

    def get_group(self, group_id: str) -> GroupStatus | None: ...

    def claim_chord(
        self,
        group_id: str,
        *,
        callback_task_id: str | None = None,
        dispatched_at: datetime | None = None,
        claimed_by: str | None = None,
    ) -> bool:
        """Exactly one caller wins; a later call with the winner's ``claimed_by`` wins
        again (the re-run of the member that claimed, after a crash)."""
        ...

    def run_cleanup(self) -> int: ...

    def close(self) -> None: ...
