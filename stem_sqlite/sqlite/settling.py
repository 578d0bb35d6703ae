"""The settling half of the SQLite broker: ack, nack, dead-letter, extend and reschedule."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..codec import dumps
from ..errors import InvalidArgument
from ..model import Delivery, Envelope
from ..timeutil import Duration, to_ms, to_seconds
from . import dead_letters_sql as dl_sql
from . import jobs_sql as sql

if TYPE_CHECKING:
    from .connection import Database
    from .consumer import SqliteConsumer

log = logging.getLogger("stem_sqlite.broker")


class DeliverySettling:
    """Settling operations of :class:`SqliteBroker` (same file, same namespace).

    Each acts only while the delivery's receipt (its lease token) still holds the job.
    """

    namespace: str
    _db: Database

    def _now_ms(self) -> int:
        raise NotImplementedError

    def _job_params(self, envelope: Envelope, now: int) -> dict[str, Any]:
        raise NotImplementedError

    def _settled(self, receipt: str) -> None:
        raise NotImplementedError

    def _claim_params(self, queue: str, n: int, consumer: SqliteConsumer) -> dict[str, Any]:
        raise NotImplementedError

    def _delivered(
        self, rows: list[Any], params: dict[str, Any], consumer: SqliteConsumer
    ) -> list[Delivery]:
        raise NotImplementedError

    def ack(self, delivery: Delivery) -> bool:
        """Delete the job if this receipt still holds it; False (and no change) otherwise."""
        return self.ack_many([delivery])[0]

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Ack several deliveries in one transaction; for each, whether its job was
        deleted (False for a receipt whose lease was taken over, as with :meth:`ack`)."""
        keys = [_split_receipt(_receipt_of(delivery)) for delivery in deliveries]
        done: list[bool] = []
        try:
            if len(keys) == 1:
                token, job_id = keys[0]
                params = (self.namespace, job_id, token)
                done.append(self._db.write_one(sql.ACK_JOB, params).rowcount == 1)
            elif keys:
                with self._db.write() as conn:
                    done = self._ack_keys(conn, keys)
        finally:
            for delivery in deliveries:
                self._settled(delivery.receipt)
        _warn_stale(keys, done)
        return done

    def _ack_and_claim(
        self, deliveries: Sequence[Delivery], consumer: SqliteConsumer, n: int
    ) -> tuple[list[bool], list[Delivery]]:
        """Ack ``deliveries`` and claim up to ``n`` jobs of the consumer's queue in one
        transaction (one commit where a worker would otherwise make two)."""
        keys = [_split_receipt(_receipt_of(delivery)) for delivery in deliveries]
        params = self._claim_params(consumer.queue, n, consumer)
        done: list[bool] = []
        rows: list[Any] = []
        try:
            with self._db.write() as conn:
                done = self._ack_keys(conn, keys)
                if n > 0:
                    rows = conn.execute(sql.CLAIM_JOBS, params).fetchall()
        finally:
            for delivery in deliveries:
                self._settled(delivery.receipt)
        _warn_stale(keys, done)
        return done, self._delivered(rows, params, consumer)

    def _ack_keys(self, conn: sqlite3.Connection, keys: list[tuple[str, str]]) -> list[bool]:
        """Ack ``(token, job id)`` pairs inside an open transaction; whether each deleted."""
        return [
            conn.execute(sql.ACK_JOB, (self.namespace, job_id, token)).rowcount == 1
            for token, job_id in keys
        ]

    def nack(self, delivery: Delivery, *, requeue: bool = True) -> bool:
        """Make the job visible again at once, or dead-letter it with reason ``"nack"``."""
        if not requeue:
            return self.dead_letter(delivery, reason="nack")
        token, job_id = _split_receipt(_receipt_of(delivery))
        now = self._now_ms()
        try:
            params = {"now": now, "ns": self.namespace, "id": job_id, "token": token}
            return self._db.write_one(sql.RELEASE_JOB, params).rowcount == 1
        finally:
            self._settled(delivery.receipt)

    def dead_letter(
        self, delivery: Delivery, *, reason: str | None = None, meta: dict[str, Any] | None = None
    ) -> bool:
        """Move the job to the dead-letter store in one transaction (replacing an older entry)."""
        _receipt_of(delivery)
        try:
            return self._dead_letter_receipt(delivery.receipt, reason, meta)
        finally:
            self._settled(delivery.receipt)

    def _dead_letter_receipt(
        self, receipt: str, reason: str | None, meta: dict[str, Any] | None
    ) -> bool:
        meta_text = dumps(meta or {}, where="dead-letter meta")
        token, job_id = _split_receipt(receipt)
        with self._db.write() as conn:
            row = conn.execute(sql.TAKE_LEASED_JOB, (self.namespace, job_id, token)).fetchone()
            if row is None:
                return False
            queue, envelope_text = row
            conn.execute(
                dl_sql.UPSERT_DEAD_LETTER,
                (self.namespace, job_id, queue, envelope_text, reason, meta_text, self._now_ms()),
            )
        return True

    def extend_lease(self, delivery: Delivery, by: Duration) -> bool:
        """Make the lease end ``by`` seconds from now (not from its old end)."""
        seconds = to_seconds(by, name="by", allow_zero=False)
        token, job_id = _split_receipt(_receipt_of(delivery))
        now = self._now_ms()
        params = {
            "until": now + to_ms(seconds),
            "now": now,
            "ns": self.namespace,
            "id": job_id,
            "token": token,
        }
        return self._db.write_one(sql.EXTEND_LEASE, params).rowcount == 1

    def reschedule(self, delivery: Delivery, envelope: Envelope) -> bool:
        """Settle this delivery and store ``envelope`` (same id) in its place, atomically.

        This is the retry primitive: the new attempt, ``not_before`` and meta replace
        the old job in one statement, so a crash leaves either the old lease (which
        expires and is redelivered) or the new job, never neither.
        """
        token, job_id = _split_receipt(_receipt_of(delivery))
        if envelope.id != job_id:
            raise InvalidArgument(
                f"reschedule keeps the job id: the envelope id {envelope.id!r} differs from "
                f"the delivery's {job_id!r}"
            )
        params = self._job_params(envelope, self._now_ms())
        params["token"] = token
        try:
            return self._db.write_one(sql.RESCHEDULE_JOB, params).rowcount == 1
        finally:
            self._settled(delivery.receipt)


def _receipt_of(delivery: Delivery) -> str:
    if not isinstance(delivery, Delivery):
        raise InvalidArgument(f"expected a Delivery, got {type(delivery).__name__}")
    return delivery.receipt


def _split_receipt(receipt: str) -> tuple[str, str]:
    token, sep, job_id = receipt.partition(":")
    if not sep or not token or not job_id:
        raise InvalidArgument(f"{receipt!r} is not a receipt issued by a SQLite broker")
    return token, job_id


def _warn_stale(keys: list[tuple[str, str]], done: list[bool]) -> None:
    for (_token, job_id), ok in zip(keys, done, strict=True):
        if not ok:
            log.warning("stale receipt: ack of job %s refused (its lease was taken over)", job_id)
