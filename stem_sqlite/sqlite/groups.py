"""Worker heartbeats, groups and chords of the SQLite result backend."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..codec import dumps, loads
from ..errors import InvalidArgument
from ..model import GroupDescriptor, GroupStatus, TaskStatus, WorkerHeartbeat, coerce_state
from ..timeutil import datetime_to_ms, from_ms, iso, require_aware, to_ms, to_seconds
from . import results_sql as sql
from .status_queries import GroupResults

if TYPE_CHECKING:
    from .connection import Database


class GroupsAndHeartbeats:
    """Heartbeat, group and chord operations of :class:`SqliteResultBackend`."""

    namespace: str
    heartbeat_ttl: float
    group_default_ttl: float
    _db: Database

    def _now_ms(self) -> int:
        raise NotImplementedError

    # -- heartbeats ----------

    def set_worker_heartbeat(self, heartbeat: WorkerHeartbeat) -> None:
        """Store the worker's heartbeat; it expires ``heartbeat_ttl`` from now."""
        check_id(heartbeat.worker_id, "worker_id")
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
        check_id(descriptor.id, "group id")
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
        claimed_by: str | None = None,
    ) -> bool:
        """Claim the right to dispatch the group's chord callback. Exactly one caller,
        in any process, gets True; a missing or expired group gives False. A later
        claim with the winner's ``claimed_by`` (the id of the member task that claimed)
        gets True again: that member's re-run, after a crash, finishes the dispatch."""
        when = iso(require_aware(dispatched_at, name="dispatched_at")) if dispatched_at else None
        params = {
            "now": self._now_ms(),
            "callback": callback_task_id,
            "dispatched_at": when,
            "claimed_by": claimed_by,
            "ns": self.namespace,
            "id": group_id,
        }
        return self._db.write_one(sql.CLAIM_CHORD, params).rowcount == 1


def check_id(value: object, label: str) -> None:
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
