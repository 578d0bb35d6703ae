"""The SQLite result backend: task states with TTLs, groups and chords, worker heartbeats."""

from __future__ import annotations

import queue as queue_module
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from ..codec import dumps
from ..errors import InvalidArgument, ResultTimeout, StemError
from ..model import (
    StatusWrite,
    TaskError,
    TaskState,
    TaskStatus,
    coerce_state,
)
from ..timeutil import (
    SYSTEM_CLOCK,
    Clock,
    Duration,
    to_ms,
    to_seconds,
)
from . import results_sql as sql
from .broker import clean_namespace
from .connection import Database, open_database, release_database
from .groups import GroupsAndHeartbeats, check_id
from .maintenance import Periodic
from .schema import BACKEND
from .status_queries import StatusQueries, status_from_row


class SqliteResultBackend(StatusQueries, GroupsAndHeartbeats):
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
        write = StatusWrite(
            task_id, state, payload, error, attempt, meta, ttl, owner, take_over, epoch
        )
        return self.set_many([write])[0]

    def set_many(self, writes: Sequence[StatusWrite]) -> list[bool]:
        """Apply several :meth:`set` calls in one transaction, in order (one commit for
        them all: how a worker stores the statuses of many short tasks). Returns, for
        each write, whether it was written; every write is checked before any is made."""
        now = self._now_ms()
        prepared = [self._prepare(write, now) for write in writes]
        if not prepared:
            return []
        revisions: list[int | None] = []
        if len(prepared) == 1:  # one statement is its own transaction: one round trip
            guard, params = prepared[0]
            row = self._db.write_one(sql.STATUS_WRITES_RETURNING[guard], params).fetchone()
            revisions.append(None if row is None else int(row[0]))
        else:
            with self._db.write() as conn:
                revisions = self._write_all(conn, prepared)
        for write, revision in zip(writes, revisions, strict=True):
            if revision:
                self._push(write.task_id, revision, _status_of(write))
        return [revision is not None for revision in revisions]

    def _write_all(
        self, conn: Any, prepared: list[tuple[str | None, dict[str, Any]]]
    ) -> list[int | None]:
        """Make the writes in the open transaction: each one's new revision, or None
        where it was refused; 0 where it was written but its revision was not read."""
        guards = {guard for guard, _ in prepared}
        if len(guards) == 1 and not self._db.listeners:
            # Nobody in this process watches a status, so no revision is needed, and one
            # executemany costs a third less than a statement per write. Should a guard
            # refuse one (a stale lease), they are made again one by one.
            (guard,) = guards
            conn.execute("SAVEPOINT stem_statuses")
            written = conn.executemany(
                sql.STATUS_WRITES[guard], [params for _, params in prepared]
            ).rowcount
            if written == len(prepared):
                conn.execute("RELEASE stem_statuses")
                return [0] * len(prepared)
            conn.execute("ROLLBACK TO stem_statuses")
            conn.execute("RELEASE stem_statuses")
        revisions: list[int | None] = []
        for guard, params in prepared:
            row = conn.execute(sql.STATUS_WRITES_RETURNING[guard], params).fetchone()
            revisions.append(None if row is None else int(row[0]))
        return revisions

    def _prepare(self, write: StatusWrite, now: int) -> tuple[str | None, dict[str, Any]]:
        """The checked guard and parameters of one status write."""
        task_id = write.task_id
        check_id(task_id, "task_id")
        task_state = coerce_state(write.state)
        error = write.error
        if error is not None and not isinstance(error, TaskError):
            raise InvalidArgument(f"error must be a TaskError or None, got {error!r}")
        attempt = write.attempt
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise InvalidArgument(f"attempt must be an integer of 0 or more, got {attempt!r}")
        meta = write.meta or {}
        life = self.default_ttl if write.ttl is None else to_seconds(write.ttl, name="ttl")
        owner = write.owner
        queue = meta.get("queue")
        params = {
            "ns": self.namespace,
            "id": task_id,
            "state": task_state.value,
            "queue": queue if isinstance(queue, str) else None,
            "payload": dumps(write.payload, where=f"result of task {task_id}"),
            "error": dumps(error.to_dict(), where="error") if error else None,
            "attempt": attempt,
            "meta": dumps(meta, where="meta"),
            "now": now,
            "expires_at": now + to_ms(life),
            "owner": owner,
            "epoch": write.epoch,
        }
        guard: str | None = None
        if task_state is TaskState.QUEUED:
            guard = "queued"
        elif owner is not None and task_state is not TaskState.RUNNING and not write.take_over:
            guard = "owned"
        elif owner is not None and write.epoch is not None:
            guard = "take_over"
        return guard, params

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
        check_id(task_id, "task_id")
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
        check_id(task_id, "task_id")
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


def _status_of(write: StatusWrite) -> TaskStatus:
    """The status a write stored, as pushed to this process's watchers."""
    return TaskStatus(
        write.task_id,
        coerce_state(write.state),
        write.payload,
        write.error,
        write.attempt,
        dict(write.meta or {}),
    )


__all__ = ["SqliteResultBackend"]
