"""Counting and purging a queue of the SQLite broker (the administration half)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model import clean_queue_name
from . import jobs_sql as sql

if TYPE_CHECKING:
    from .connection import Database


class QueueInspection:
    """Counts, queue listing and purge of :class:`SqliteBroker` (same file, same namespace)."""

    namespace: str
    _db: Database

    def _now_ms(self) -> int:
        raise NotImplementedError

    def purge(self, queue: str) -> int:
        """Delete every job of ``queue`` (ready, delayed and leased); dead letters stay."""
        name = clean_queue_name(queue)
        return self._db.write_one(sql.PURGE_QUEUE, (self.namespace, name)).rowcount

    def _count(self, statement: str, queue: str) -> int:
        name = clean_queue_name(queue)
        with self._db.read() as conn:
            return int(
                conn.execute(statement, (self.namespace, name, self._now_ms())).fetchone()[0]
            )

    def pending_count(self, queue: str) -> int:
        """Jobs that a consumer could claim now (expired leases included)."""
        return self._count(sql.COUNT_PENDING, queue)

    def inflight_count(self, queue: str) -> int:
        """Jobs whose lease is running."""
        return self._count(sql.COUNT_INFLIGHT, queue)

    def delayed_count(self, queue: str) -> int:
        """Jobs waiting for their ``not_before`` time."""
        return self._count(sql.COUNT_DELAYED, queue)

    def queues(self) -> list[str]:
        """Queues of this namespace that hold jobs or dead letters."""
        with self._db.read() as conn:
            return [row[0] for row in conn.execute(sql.LIST_QUEUES, {"ns": self.namespace})]
