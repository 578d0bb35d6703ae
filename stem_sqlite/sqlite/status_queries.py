"""Listing and counting task statuses with set-based filters (no scans in Python)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..codec import dumps, loads
from ..errors import InvalidArgument
from ..model import TaskError, TaskState, TaskStatus, TaskStatusPage, TaskStatusRecord, coerce_state
from ..timeutil import from_ms

if TYPE_CHECKING:
    from ..timeutil import Clock
    from .connection import Database


def status_from_row(row: tuple[Any, ...]) -> TaskStatus:
    task_id, state, payload, error, attempt, meta = row[:6]
    return TaskStatus(
        id=task_id,
        state=TaskState(state),
        payload=loads(payload),
        error=TaskError.from_dict(loads(error)) if error else None,
        attempt=attempt,
        meta=loads(meta) or {},
    )


class GroupResults(Mapping[str, TaskStatus]):
    """A group's member results in member order, decoded only when read.

    Every member's completion reads its group to see whether it is complete; decoding
    every result each time would make a group of N members cost N^2 decodes.
    """

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = {row[0]: row for row in rows}
        self._decoded: dict[str, TaskStatus] = {}

    def __getitem__(self, task_id: str) -> TaskStatus:
        status = self._decoded.get(task_id)
        if status is None:
            status = status_from_row(self._rows[task_id])
            self._decoded[task_id] = status
        return status

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"GroupResults({dict(self)!r})"


class StatusQueries:
    """Read-side queries of the result backend, shared by its engine class."""

    namespace: str
    clock: Clock
    _db: Database

    def _now_ms(self) -> int:
        raise NotImplementedError

    def _filters(
        self,
        state: TaskState | str | None,
        queue: str | None,
        meta: dict[str, Any] | None,
    ) -> tuple[str, list[Any]]:
        # Served by stem_task_results_by_state / _by_queue / _recent, which all
        # start with namespace and end with updated_at DESC for the ordering.
        clauses = ["namespace = ?", "expires_at > ?"]
        params: list[Any] = [self.namespace, self._now_ms()]
        if state is not None:
            clauses.append("state = ?")
            params.append(coerce_state(state).value)
        if queue is not None:
            clauses.append("queue = ?")
            params.append(queue)
        for key, value in (meta or {}).items():
            if not isinstance(key, str) or not key:
                raise InvalidArgument(f"meta filter keys must be non-empty strings, got {key!r}")
            # The key is a parameter too (a JSON path would need quoting rules of its own).
            if value is None:
                clauses.append("EXISTS (SELECT 1 FROM json_each(meta) WHERE key = ?)")
                params.append(key)
            else:
                clauses.append(
                    "EXISTS (SELECT 1 FROM json_each(meta) WHERE key = ?"
                    " AND value IS json_extract(?, '$'))"
                )
                params.extend([key, dumps(value, where=f"meta filter {key!r}")])
        return " AND ".join(clauses), params

    def list_task_statuses(
        self,
        *,
        state: TaskState | str | None = None,
        queue: str | None = None,
        meta: dict[str, Any] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> TaskStatusPage:
        """Live statuses, most recently updated first, filtered by state, queue
        (``meta["queue"]``) and meta keys (a None value means "key present")."""
        if limit <= 0:
            return TaskStatusPage([], None)
        if offset < 0:
            raise InvalidArgument(f"offset must be 0 or more, got {offset}")
        where, params = self._filters(state, queue, meta)
        statement = (
            "SELECT id, state, payload, error, attempt, meta, revision, created_at, updated_at "
            f"FROM stem_task_results WHERE {where} ORDER BY updated_at DESC, id LIMIT ? OFFSET ?"
        )
        with self._db.read() as conn:
            rows = conn.execute(statement, [*params, limit + 1, offset]).fetchall()
        items = [
            TaskStatusRecord(status_from_row(row), from_ms(row[7]), from_ms(row[8]))
            for row in rows[:limit]
        ]
        return TaskStatusPage(items, offset + limit if len(rows) > limit else None)

    def count_task_statuses(
        self, *, state: TaskState | str | None = None, queue: str | None = None
    ) -> int:
        """How many live (unexpired) statuses match."""
        where, params = self._filters(state, queue, None)
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT count(*) FROM stem_task_results WHERE {where}", params
            ).fetchone()
        return int(row[0])
