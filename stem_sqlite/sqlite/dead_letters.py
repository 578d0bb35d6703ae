"""The dead-letter half of the SQLite broker: listing, replaying and purging dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..model import DeadLetterEntry, DeadLetterPage, Envelope, ReplayResult, clean_queue_name
from ..timeutil import Duration, datetime_to_ms, from_ms, require_aware, to_ms, to_seconds
from . import dead_letters_sql as dl_sql
from .rows import dead_letter_from_row

if TYPE_CHECKING:
    from .connection import Database

MAX_REPLAY = 500


class DeadLetterStore:
    """Dead-letter operations of :class:`SqliteBroker` (same file, same namespace)."""

    namespace: str
    dead_letter_retention: float
    _db: Database

    def _now_ms(self) -> int:
        raise NotImplementedError

    def _job_params(self, envelope: Envelope, now: int) -> dict[str, Any]:
        raise NotImplementedError

    def dead_letter_count(self, queue: str) -> int:
        """How many dead letters the queue holds."""
        name = clean_queue_name(queue)
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT count(*) FROM stem_dead_letters WHERE namespace = ? AND queue = ?",
                (self.namespace, name),
            ).fetchone()
        return int(row[0])

    def list_dead_letters(self, queue: str, *, limit: int = 50, offset: int = 0) -> DeadLetterPage:
        """One page of the queue's dead letters, newest first."""
        name = clean_queue_name(queue)
        if limit <= 0:
            return DeadLetterPage([], None)
        if offset < 0:
            raise InvalidArgument(f"offset must be 0 or more, got {offset}")
        with self._db.read() as conn:
            rows = conn.execute(
                dl_sql.LIST_DEAD_LETTERS, (self.namespace, name, 0, limit + 1, offset)
            ).fetchall()
        entries = [dead_letter_from_row(row) for row in rows[:limit]]
        return DeadLetterPage(entries, offset + limit if len(rows) > limit else None)

    def get_dead_letter(self, queue: str, id: str) -> DeadLetterEntry | None:
        name = clean_queue_name(queue)
        with self._db.read() as conn:
            row = conn.execute(dl_sql.GET_DEAD_LETTER, (self.namespace, id, name)).fetchone()
        return dead_letter_from_row(row) if row else None

    def replay_dead_letters(
        self,
        queue: str,
        *,
        limit: int = 50,
        since: datetime | None = None,
        delay: Duration | None = None,
        dry_run: bool = False,
    ) -> ReplayResult:
        """Put the newest dead letters (up to ``limit``, at most 500) back on their queue.

        ``since`` keeps only entries that died at or after it; ``delay`` makes the
        replayed jobs wait. An entry whose id is already live again (re-published)
        stays in the dead-letter store and is not reported as replayed.
        """
        name = clean_queue_name(queue)
        since_ms = datetime_to_ms(require_aware(since, name="since")) if since else 0
        delay_ms = to_ms(to_seconds(delay, name="delay")) if delay is not None else 0
        limit = max(1, min(int(limit), MAX_REPLAY))
        with self._db.read() as conn:
            rows = conn.execute(
                dl_sql.LIST_DEAD_LETTERS, (self.namespace, name, since_ms, limit, 0)
            ).fetchall()
        entries = [dead_letter_from_row(row) for row in rows]
        if dry_run or not entries:
            return ReplayResult(entries, dry_run)
        now = self._now_ms()
        replayed: list[DeadLetterEntry] = []
        with self._db.write() as conn:
            for entry in entries:
                envelope = entry.envelope
                if delay_ms:
                    envelope = envelope.with_changes(not_before=from_ms(now + delay_ms))
                params = self._job_params(envelope, now)
                params["queue"] = name
                if conn.execute(dl_sql.REINSERT_JOB, params).rowcount == 1:
                    conn.execute(dl_sql.DELETE_DEAD_LETTER, (self.namespace, envelope.id))
                    replayed.append(entry)
        return ReplayResult(replayed, False)

    def purge_dead_letters(
        self, queue: str, *, since: datetime | None = None, limit: int | None = None
    ) -> int:
        """Delete the queue's dead letters that died at or after ``since`` (all when None),
        the newest ``limit`` of them when a limit is given. Returns how many were deleted."""
        name = clean_queue_name(queue)
        since_ms = datetime_to_ms(require_aware(since, name="since")) if since else 0
        if limit is not None and limit <= 0:
            return 0
        params = {
            "ns": self.namespace,
            "queue": name,
            "since": since_ms,
            "limit": -1 if limit is None else int(limit),
        }
        return self._db.write_one(dl_sql.PURGE_DEAD_LETTERS, params).rowcount

    def run_maintenance(self) -> None:
        """One sweeper pass now: drop dead letters older than the retention period."""
        if self.dead_letter_retention > 0:
            cutoff = self._now_ms() - to_ms(self.dead_letter_retention)
            self._db.write_one(dl_sql.EXPIRE_DEAD_LETTERS, (self.namespace, cutoff))
