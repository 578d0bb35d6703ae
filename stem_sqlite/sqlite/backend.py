"""The SQLite result backend: task states with TTLs, groups and chords, worker heartbeats."""

from __future__ import annotations

import queue as queue_module
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from ..codec import dumps, loads
from ..errors import InvalidArgument, ResultTimeout, StemError
from ..model import (
    GroupDescriptor,
    GroupStatus,
    TaskError,
    TaskState,
    TaskStatus,
    WorkerHeartbeat,
    coerce_state,
)
from ..timeutil import (
    SYSTEM_CLOCK,
    Clock,
    Duration,
    datetime_to_ms,
    from_ms,
    iso,
    require_aware,
    to_ms,
    to_seconds,
)
from . import results_sql as sql
from .broker import clean_namespace
from .connection import Database, open_database, release_database
from .maintenance import Periodic
from .schema import BACKEND
from .status_queries import GroupResults, StatusQueries, status_from_row


class SqliteResultBackend(StatusQueries):
    """A result backend stored in one SQLite file (WAL). Open it with :meth:`open`.

    Records expire ``default_ttl`` after their last write; expiry applies when
    reading, and a cleanup pass removes expired rows every ``cleanup_interval``.
    ``watch`` and ``wait`` see writes made by other processes too.
    """

    def __init__(
        self,
        db: Database,
        *,
        namespace: str = "stem",
        default_ttl: Duration = timedelta(days=1),
        group_default_ttl: Duration = timedelta(days=1),
        heartbeat_ttl: Duration = 60,
        cleanup_interval: Duration = 60,
        poll_interval: Duration = 0.05,
        clock: Clock | None = None,
    ) -> None:
        self._db = db
        self.namespace = clean_namespace(namespace)
        self.default_ttl = to_seconds(default_ttl, name="default_ttl")
        self.group_default_ttl = to_seconds(group_default_ttl, name="group_default_ttl")
        self.heartbeat_ttl = to_seconds(heartbeat_ttl, name="heartbeat_ttl")
        self.poll_interval = to_seconds(poll_interval, name="poll_interval", allow_zero=False)
        self.clock = clock or SYSTEM_CLOCK
        self._closed = False
        self._cleanup = Periodic(
            f"stem-backend-cleanup[{self.namespace}]",
            to_seconds(cleanup_interval, name="cleanup_interval"),
            self.run_cleanup,
        )

    @classmethod
    def open(
        cls,
        path: str | Any,
        *,
        namespace: str = "stem",
        default_ttl: Duration = timedelta(days=1),
        group_default_ttl: Duration = timedelta(days=1),
        heartbeat_ttl: Duration = 60,
        cleanup_interval: Duration = 60,
        synchronous: str = "NORMAL",
        poll_interval: Duration = 0.05,
        clock: Clock | None = None,
    ) -> SqliteResultBackend:
        """Open the result-backend file at ``path``, creating and migrating it when needed.

        ``poll_interval`` bounds how long ``watch``/``wait`` take to notice a write
        made by another process (writes of this process are seen at once).
        """
        for name, value in (
            ("default_ttl", default_ttl),
            ("group_default_ttl", group_default_ttl),
            ("heartbeat_ttl", heartbeat_ttl),
            ("cleanup_interval", cleanup_interval),
        ):
            to_seconds(value, name=name)
        to_seconds(poll_interval, name="poll_interval", allow_zero=False)
        clean_namespace(namespace)
        db = open_database(path, BACKEND, synchronous=synchronous)
        try:
            return cls(
                db,
                namespace=namespace,
                default_ttl=default_ttl,
                group_default_ttl=group_default_ttl,
                heartbeat_ttl=heartbeat_ttl,
                cleanup_interval=cleanup_interval,
                poll_interval=poll_interval,
                clock=clock,
            )
        except BaseException:
            release_database(db)
            raise

    @property
    def path(self) -> str:
        return str(self._db.path)

    @property
    def database(self) -> Database:
        return self._db

    def _now_ms(self) -> int:
        return to_ms(self.clock.now())

    # -- task statuses ----------

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
    ) -> bool:
        """Replace the task's whole record; its TTL restarts. Returns whether it was written.

        A ``queued`` write never replaces a live record in another state (a fast
        worker may already have written ``running`` or the result). ``owner`` fences
        a worker's writes by its lease: ``running`` with an owner always takes the
        record over; any other state with an owner is written only while the record
        has no owner or the same one, so a worker whose lease was taken over cannot
        overwrite the newer run's status. ``take_over=True`` (for the holder of a fresh
        lease that settles a job without running it) writes like ``running`` does.
        ``epoch`` (when the writer's lease began) keeps an older lease from taking over
        a record written by a newer one.
        """
        _check_id(task_id, "task_id")
        task_state = coerce_state(state)
        if error is not None and not isinstance(error, TaskError):
            raise InvalidArgument(f"error must be a TaskError or None, got {error!r}")
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise InvalidArgument(f"attempt must be an integer of 0 or more, got {attempt!r}")
        meta = dict(meta or {})
        life = self.default_ttl if ttl is None else to_seconds(ttl, name="ttl")
        now = self._now_ms()
        params = {
            "ns": self.namespace,
            "id": task_id,
            "state": task_state.value,
            "queue": meta.get("queue") if isinstance(meta.get("queue"), str) else None,
            "payload": dumps(payload, where=f"result of task {task_id}"),
            "error": dumps(error.to_dict(), where="error") if error else None,
            "attempt": attempt,
            "meta": dumps(meta, where="meta"),
            "now": now,
            "expires_at": now + to_ms(life),
            "owner": owner,
            "epoch": epoch,
        }
        statement = sql.UPSERT_STATUS
        if task_state is TaskState.QUEUED:
            statement += sql.UPSERT_QUEUED_SUFFIX
        elif owner is not None and task_state is not TaskState.RUNNING and not take_over:
            statement += sql.UPSERT_OWNED_SUFFIX
        elif owner is not None and epoch is not None:
            statement += sql.UPSERT_TAKE_OVER_SUFFIX
        statement += " RETURNING revision"
        row = self._db.write_one(statement, params).fetchone()
        if row is None:
            return False
        status = TaskStatus(task_id, task_state, payload, error, attempt, meta)
        self._push(task_id, int(row[0]), status)
        return True

    def get(self, task_id: str) -> TaskStatus | None:
        """The task's status, or None when there is none or it has expired."""
        row = self._read_status(task_id)
        return status_from_row(row) if row else None

    def _read_status(self, task_id: str) -> tuple[Any, ...] | None:
        with self._db.read() as conn:
            return conn.execute(  # type: ignore[no-any-return]
                sql.GET_STATUS, (self.namespace, task_id, self._now_ms())
            ).fetchone()

    def _topic(self, task_id: str) -> str:
        return f"status:{self.namespace}:{task_id}"

    def _push(self, task_id: str, revision: int, status: TaskStatus) -> None:
        topic = self._topic(task_id)
        with self._db.listeners_lock:
            listeners = list(self._db.listeners.get(topic, ()))
        for listener in listeners:
            listener.put((revision, status))

    def watch(self, task_id: str, *, timeout: Duration | None = None) -> Iterator[TaskStatus]:
        """Yield every later status of the task, whichever process writes it.

        Writes made through this process are delivered one by one; writes of other
        processes are noticed within ``poll_interval`` (two writes that land between
        two checks show as the later one). Ends after a terminal state or the timeout.
        """
        _check_id(task_id, "task_id")
        wait = None if timeout is None else to_seconds(timeout, name="timeout")
        deadline = None if wait is None else time.monotonic() + wait
        inbox: queue_module.SimpleQueue[tuple[int, TaskStatus]] = queue_module.SimpleQueue()
        topic = self._topic(task_id)
        with self._db.listeners_lock:
            self._db.listeners.setdefault(topic, set()).add(inbox)
        try:
            try:
                yield from self._watch_loop(task_id, inbox, deadline)
            except StemError:
                if self._closed or self._db.closed:
                    return  # close() ends every watch, it does not break it
                raise
        finally:
            with self._db.listeners_lock:
                listeners = self._db.listeners.get(topic)
                if listeners is not None:
                    listeners.discard(inbox)
                    if not listeners:
                        del self._db.listeners[topic]

    def _watch_loop(
        self,
        task_id: str,
        inbox: queue_module.SimpleQueue[tuple[int, TaskStatus]],
        deadline: float | None,
    ) -> Iterator[TaskStatus]:
        current = self._read_status(task_id)
        seen = int(current[6]) if current else 0
        mark = self._db.mark()
        while not self._closed:
            while not inbox.empty():
                revision, status = inbox.get()
                if revision > seen:
                    seen = revision
                    yield status
                    if status.state.is_terminal:
                        return
            if self._closed:
                return
            row = self._read_status(task_id)
            if row is not None and int(row[6]) > seen:
                seen = int(row[6])
                status = status_from_row(row)
                yield status
                if status.state.is_terminal:
                    return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            step = self.poll_interval if remaining is None else min(remaining, self.poll_interval)
            self._db.wait_for_change(mark, step, min(step, 0.005))
            mark = self._db.mark()

    def wait(self, task_id: str, *, timeout: Duration | None = None) -> TaskStatus:
        """The task's terminal status; :class:`ResultTimeout` if it does not come in time.

        Reads only: a producer may wait without ever writing the backend file.
        """
        _check_id(task_id, "task_id")
        wait = None if timeout is None else to_seconds(timeout, name="timeout")
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            mark = self._db.mark()  # before the read, so a write right after it wakes us
            status = self.get(task_id)
            if status is not None and status.state.is_terminal:
                return status
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                state = status.state.value if status else "no status"
                raise ResultTimeout(
                    f"task {task_id} did not finish within {timeout}s (last seen: {state}); "
                    "is a worker consuming its queue?"
                )
            if self._closed:
                raise ResultTimeout(f"the result backend was closed while waiting for {task_id}")
            step = self.poll_interval if remaining is None else min(remaining, self.poll_interval)
            self._db.wait_for_change(mark, step, min(step, 0.005))

    def expire(self, task_id: str, ttl: Duration) -> None:
        """Make the record expire ``ttl`` from now (shorter or longer); no-op when missing."""
        life = to_seconds(ttl, name="ttl")
        self._db.write_one(
            sql.EXPIRE_STATUS, (self._now_ms() + to_ms(life), self.namespace, task_id)
        )

    # -- heartbeats ----------

    def set_worker_heartbeat(self, heartbeat: WorkerHeartbeat) -> None:
        """Store the worker's heartbeat; it expires ``heartbeat_ttl`` from now."""
        _check_id(heartbeat.worker_id, "worker_id")
        now = self._now_ms()
        renewal = heartbeat.last_lease_renewal
        self._db.write_one(
            sql.UPSERT_HEARTBEAT,
            (
                self.namespace,
                heartbeat.worker_id,
                datetime_to_ms(require_aware(heartbeat.timestamp, name="timestamp")),
                int(heartbeat.inflight),
                dumps(list(heartbeat.queues), where="heartbeat queues"),
                int(heartbeat.concurrency),
                datetime_to_ms(require_aware(renewal, name="last_lease_renewal"))
                if renewal
                else None,
                str(heartbeat.version),
                dumps(heartbeat.extras, where="heartbeat extras"),
                now + to_ms(self.heartbeat_ttl),
            ),
        )

    def get_worker_heartbeat(self, worker_id: str) -> WorkerHeartbeat | None:
        with self._db.read() as conn:
            row = conn.execute(
                sql.GET_HEARTBEAT, (self.namespace, worker_id, self._now_ms())
            ).fetchone()
        return _heartbeat_from_row(row) if row else None

    def list_worker_heartbeats(self) -> list[WorkerHeartbeat]:
        """Live heartbeats, ordered by worker id."""
        with self._db.read() as conn:
            rows = conn.execute(sql.LIST_HEARTBEATS, (self.namespace, self._now_ms())).fetchall()
        return [_heartbeat_from_row(row) for row in rows]

    # -- groups and chords ----------

    def init_group(self, descriptor: GroupDescriptor) -> None:
        """Create (or reset: its results are deleted) a group expecting ``expected`` members."""
        _check_id(descriptor.id, "group id")
        if (
            isinstance(descriptor.expected, bool)
            or not isinstance(descriptor.expected, int)
            or descriptor.expected < 0
        ):
            raise InvalidArgument(
                f"expected must be an integer of 0 or more, got {descriptor.expected!r}"
            )
        life = (
            self.group_default_ttl
            if descriptor.ttl is None
            else to_seconds(descriptor.ttl, name="ttl")
        )
        now = self._now_ms()
        meta = dumps(descriptor.meta, where="group meta")
        with self._db.write() as conn:
            conn.execute(
                sql.UPSERT_GROUP,
                (
                    self.namespace,
                    descriptor.id,
                    descriptor.expected,
                    meta,
                    now,
                    now,
                    now + to_ms(life),
                ),
            )
            conn.execute(sql.DELETE_GROUP_RESULTS, (self.namespace, descriptor.id))

    def add_group_result(self, group_id: str, status: TaskStatus) -> GroupStatus | None:
        """Record a member's status; None (and nothing written) when the group is missing
        or expired. The member's position is ``status.meta["stem.groupIndex"]`` when given."""
        position = status.meta.get("stem.groupIndex")
        if not isinstance(position, int) or isinstance(position, bool):
            position = None
        state = coerce_state(status.state)
        now = self._now_ms()
        with self._db.write() as conn:
            group = conn.execute(sql.GET_GROUP, (self.namespace, group_id, now)).fetchone()
            if group is None:
                return None
            conn.execute(
                sql.UPSERT_GROUP_RESULT,
                (
                    self.namespace,
                    group_id,
                    status.id,
                    position,
                    state.value,
                    dumps(status.payload, where=f"result of task {status.id}"),
                    dumps(status.error.to_dict(), where="error") if status.error else None,
                    status.attempt,
                    dumps(status.meta, where="meta"),
                    now,
                ),
            )
            return self._group_status(conn, group_id, group)

    def get_group(self, group_id: str) -> GroupStatus | None:
        """The group and its member results in member order; None when missing or expired."""
        with self._db.read() as conn:
            group = conn.execute(
                sql.GET_GROUP, (self.namespace, group_id, self._now_ms())
            ).fetchone()
            return self._group_status(conn, group_id, group) if group else None

    def _group_status(self, conn: Any, group_id: str, group: tuple[Any, ...]) -> GroupStatus:
        expected, meta_text = group
        rows = conn.execute(sql.LIST_GROUP_RESULTS, (self.namespace, group_id)).fetchall()
        return GroupStatus(group_id, expected, GroupResults(rows), loads(meta_text) or {})

    def claim_chord(
        self,
        group_id: str,
        *,
        callback_task_id: str | None = None,
        dispatched_at: datetime | None = None,
    ) -> bool:
        """Claim the right to dispatch the group's chord callback. Exactly one caller,
        in any process, gets True; a missing or expired group gives False."""
        when = iso(require_aware(dispatched_at, name="dispatched_at")) if dispatched_at else None
        params = {
            "now": self._now_ms(),
            "callback": callback_task_id,
            "dispatched_at": when,
            "ns": self.namespace,
            "id": group_id,
        }
        return self._db.write_one(sql.CLAIM_CHORD, params).rowcount == 1

    # -- maintenance ----------

    def run_cleanup(self) -> int:
        """Delete expired statuses, groups (with their results) and heartbeats now.
        Returns the number of rows removed."""
        removed = 0
        with self._db.write() as conn:
            for statement in sql.CLEANUP:
                removed += conn.execute(statement, {"now": self._now_ms()}).rowcount
        return removed

    def close(self) -> None:
        """Stop the cleanup thread and release the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._cleanup.stop()
        release_database(self._db)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SqliteResultBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_id(value: object, label: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{label} must be a non-empty string, got {value!r}")


def _heartbeat_from_row(row: tuple[Any, ...]) -> WorkerHeartbeat:
    worker_id, timestamp, inflight, queues, concurrency, renewal, version, extras = row
    return WorkerHeartbeat(
        worker_id=worker_id,
        timestamp=from_ms(timestamp),
        inflight=inflight,
        queues=loads(queues) or [],
        concurrency=concurrency,
        last_lease_renewal=from_ms(renewal) if renewal is not None else None,
        version=version,
        extras=loads(extras) or {},
    )


__all__ = ["SqliteResultBackend"]
