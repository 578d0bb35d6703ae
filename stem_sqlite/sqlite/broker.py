"""The SQLite broker: a durable queue with leases, priorities, delays and dead letters."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from ..errors import InvalidArgument, JobInFlight, UnsupportedOperation
from ..ids import new_ids
from ..model import (
    Delivery,
    Envelope,
    clean_queue_name,
)
from ..timeutil import (
    SYSTEM_CLOCK,
    Clock,
    Duration,
    datetime_to_ms,
    to_ms,
    to_seconds,
)
from . import jobs_sql as sql
from .connection import ChangeMark, Database, open_database, release_database
from .consumer import SqliteConsumer
from .dead_letters import DeadLetterStore
from .inspection import QueueInspection
from .maintenance import Periodic
from .rows import deliveries_of_claim, texts_of_copies
from .schema import BROKER
from .settling import DeliverySettling, _split_receipt

log = logging.getLogger("stem_sqlite.broker")

MAX_PREFETCH = 1000


def clean_namespace(namespace: object) -> str:
    """Trim a namespace; a blank one falls back to ``"stem"``, as in the original."""
    if namespace is None:
        return "stem"
    if not isinstance(namespace, str):
        raise InvalidArgument(f"namespace must be a string, got {namespace!r}")
    return namespace.strip() or "stem"


class SqliteBroker(DeadLetterStore, DeliverySettling, QueueInspection):
    """A broker stored in one SQLite file (WAL). Open it with :meth:`open`.

    Every claim gives the job a fresh lease token (its consumer's random prefix and a
    counter: never reused, never guessed by another consumer), carried in the delivery's
    receipt; ack, nack, extend_lease, dead_letter and reschedule act only while that
    token still holds the job, so a worker whose lease was taken over changes nothing.
    """

    supports_delayed = True
    supports_priority = True

    def __init__(
        self,
        db: Database,
        *,
        namespace: str = "stem",
        default_visibility_timeout: Duration = 30,
        poll_interval: Duration = 0.25,
        sweeper_interval: Duration = 10,
        dead_letter_retention: Duration = timedelta(days=7),
        change_check_interval: Duration = 0.005,
        clock: Clock | None = None,
    ) -> None:
        self._db = db
        self.namespace = clean_namespace(namespace)
        self.default_visibility_timeout = to_seconds(
            default_visibility_timeout, name="default_visibility_timeout", allow_zero=False
        )
        self.poll_interval = to_seconds(poll_interval, name="poll_interval", allow_zero=False)
        self.change_check_interval = min(
            to_seconds(change_check_interval, name="change_check_interval", allow_zero=False),
            self.poll_interval,
        )
        self.dead_letter_retention = to_seconds(dead_letter_retention, name="dead_letter_retention")
        self.clock = clock or SYSTEM_CLOCK
        self._consumers: set[SqliteConsumer] = set()
        self._holder_of: dict[str, SqliteConsumer] = {}
        self._last_claimed = time.monotonic()
        self._lock = threading.Lock()
        self._closed = False
        self._sweeper = Periodic(
            f"stem-broker-sweeper[{self.namespace}]",
            to_seconds(sweeper_interval, name="sweeper_interval"),
            self.run_maintenance,
        )

    @classmethod
    def open(
        cls,
        path: str | Any,
        *,
        namespace: str = "stem",
        default_visibility_timeout: Duration = 30,
        poll_interval: Duration = 0.25,
        sweeper_interval: Duration = 10,
        dead_letter_retention: Duration = timedelta(days=7),
        synchronous: str = "NORMAL",
        change_check_interval: Duration = 0.005,
        clock: Clock | None = None,
    ) -> SqliteBroker:
        """Open the broker file at ``path``, creating and migrating it when needed.

        ``synchronous="FULL"`` makes every commit survive a power loss, at the cost
        of one more fsync per commit; ``NORMAL`` (the default) survives a crash of
        the process but may lose the last commits on power loss.
        """
        # Validate the knobs before touching the file, so bad input creates nothing.
        for name, value, zero_ok in (
            ("default_visibility_timeout", default_visibility_timeout, False),
            ("poll_interval", poll_interval, False),
            ("sweeper_interval", sweeper_interval, True),
            ("dead_letter_retention", dead_letter_retention, True),
            ("change_check_interval", change_check_interval, False),
        ):
            to_seconds(value, name=name, allow_zero=zero_ok)
        clean_namespace(namespace)
        db = open_database(path, BROKER, synchronous=synchronous)
        try:
            return cls(
                db,
                namespace=namespace,
                default_visibility_timeout=default_visibility_timeout,
                poll_interval=poll_interval,
                sweeper_interval=sweeper_interval,
                dead_letter_retention=dead_letter_retention,
                change_check_interval=change_check_interval,
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

    # -- publishing ----------

    def _job_params(self, envelope: Envelope, now: int) -> dict[str, Any]:
        text = envelope.to_json()  # refuses a non-JSON value before anything is written
        visible_at = datetime_to_ms(envelope.not_before) if envelope.not_before else now
        lease = envelope.visibility_timeout
        return {
            "ns": self.namespace,
            "id": envelope.id,
            "queue": envelope.queue,
            "priority": envelope.priority,
            "visible_at": visible_at,
            "lease_ms": to_ms(lease) if lease else None,
            "attempt": envelope.attempt,
            "now": now,
            "envelope": text,
        }

    @staticmethod
    def _routed(envelope: Envelope, queue: str | None, priority: int | None) -> Envelope:
        changes: dict[str, Any] = {}
        if queue is not None:
            changes["queue"] = clean_queue_name(queue)
        if priority is not None:
            changes["priority"] = priority
        return envelope.with_changes(**changes) if changes else envelope

    def publish(
        self, envelope: Envelope, *, queue: str | None = None, priority: int | None = None
    ) -> None:
        """Store ``envelope`` (routing overrides win); it is durable when this returns.

        A ``not_before`` in the future makes the job delayed. Publishing an id that is
        pending replaces that job in place; publishing an id whose lease is running
        raises :class:`JobInFlight` and changes nothing, so a running task is never
        started a second time by a re-publish.
        """
        if not isinstance(envelope, Envelope):
            raise InvalidArgument(f"publish takes an Envelope, got {type(envelope).__name__}")
        envelope = self._routed(envelope, queue, priority)
        params = self._job_params(envelope, self._now_ms())
        if self._db.write_one(sql.UPSERT_JOB, params).rowcount != 1:
            raise _in_flight(envelope.id)

    def publish_copies(self, envelope: Envelope, count: int) -> list[str]:
        """Publish ``count`` copies of ``envelope``, each with a fresh id, in one
        transaction (all are stored, or none), and return their ids. What
        ``stem-enqueue --count`` does: the envelope is checked and encoded once."""
        if not isinstance(envelope, Envelope):
            raise InvalidArgument(f"publish_copies takes an Envelope, got {envelope!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidArgument(f"count must be an integer of 0 or more, got {count!r}")
        ids = new_ids(count)
        now = self._now_ms()
        p = self._job_params(envelope, now)
        head = (p["ns"],)
        middle = (p["queue"], p["priority"], p["visible_at"], p["lease_ms"], p["attempt"], now, now)
        rows = [
            (*head, copy_id, *middle, text)
            for copy_id, text in zip(
                ids, texts_of_copies(envelope.id, p["envelope"], ids), strict=True
            )
        ]
        if rows:
            with self._db.write() as conn:
                conn.executemany(sql.INSERT_FRESH_JOB, rows)
        return ids

    def publish_many(self, envelopes: Iterable[Envelope]) -> None:
        """Publish many envelopes in one transaction: all are stored, or none."""
        items = list(envelopes)
        for envelope in items:
            if not isinstance(envelope, Envelope):
                raise InvalidArgument(
                    f"publish_many takes Envelopes, got {type(envelope).__name__}"
                )
        if not items:
            return
        now = self._now_ms()
        rows = [self._job_params(envelope, now) for envelope in items]
        with self._db.write() as conn:
            written = conn.executemany(sql.UPSERT_JOB, rows).rowcount
            if written != len(rows):
                blocked = next(
                    row["id"]
                    for row in rows
                    if conn.execute(
                        "SELECT 1 FROM stem_jobs WHERE namespace = ? AND id = ?"
                        " AND lease_token IS NOT NULL AND visible_at > ?",
                        (self.namespace, row["id"], now),
                    ).fetchone()
                )
                raise _in_flight(blocked)

    # -- consuming ----------

    def consume(
        self,
        queue: str | Sequence[str],
        *,
        prefetch: int = 1,
        consumer_name: str | None = None,
    ) -> SqliteConsumer:
        """A consumer of one queue that holds at most ``prefetch`` unsettled deliveries.

        One consumer reads one queue: the claim orders jobs by priority within a
        queue, and a worker that serves several queues opens one consumer per queue.
        """
        if not isinstance(queue, str):
            raise UnsupportedOperation(
                "a SQLite consumer reads exactly one queue (claims are ordered by priority "
                "within one queue); open one consumer per queue, as Worker does"
            )
        name = clean_queue_name(queue)
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise InvalidArgument(f"prefetch must be an integer of 1 or more, got {prefetch!r}")
        consumer = SqliteConsumer(
            self,
            name,
            min(prefetch, MAX_PREFETCH),
            consumer_name or f"consumer-{secrets.token_hex(4)}",
        )
        with self._lock:
            self._consumers.add(consumer)
        return consumer

    def change_mark(self) -> object:
        """What has been seen of this file so far (see :meth:`wait_for_change`)."""
        return self._db.mark()

    def wait_for_change(self, mark: object, timeout: Duration) -> bool:
        """Block until this file changes after ``mark`` or ``timeout`` passes, and no
        longer than ``poll_interval``: a delayed job falls due without any commit.
        Commits of this process wake it at once; those of other processes are noticed
        within ``change_check_interval`` (twice that after a second without claims)."""
        if not isinstance(mark, ChangeMark):
            raise InvalidArgument(f"mark must come from change_mark(), got {mark!r}")
        wait = min(to_seconds(timeout, name="timeout"), self.poll_interval)
        check = self.change_check_interval
        if time.monotonic() - self._last_claimed > 1.0:
            check = min(2 * check, self.poll_interval)
        return self._db.wait_for_change(mark, wait, check)

    def _claim(self, queue: str, n: int, consumer: SqliteConsumer) -> list[Delivery]:
        """Lease up to ``n`` visible jobs of ``queue`` in one statement."""
        params = self._claim_params(queue, n, consumer)
        rows = self._db.write_one(sql.CLAIM_JOBS, params).fetchall()
        return self._delivered(rows, params, consumer)

    def _claim_params(self, queue: str, n: int, consumer: SqliteConsumer) -> dict[str, Any]:
        return {
            "token": consumer.next_token(),
            "consumer": consumer.name,
            "now": self._now_ms(),
            "default_lease_ms": to_ms(self.default_visibility_timeout),
            "ns": self.namespace,
            "queue": queue,
            "n": n,
        }

    def _delivered(
        self, rows: list[Any], params: dict[str, Any], consumer: SqliteConsumer
    ) -> list[Delivery]:
        """The deliveries of the rows a claim returned, in claim order; a row that
        cannot be decoded is dead-lettered instead."""
        queue = params["queue"]
        deliveries, damaged = deliveries_of_claim(rows, params["token"], params["now"], queue)
        for job_id, receipt, problem in damaged:
            log.error(
                "job %s in queue %s cannot be decoded (%s); dead-lettered", job_id, queue, problem
            )
            self._dead_letter_receipt(receipt, "malformed-envelope", {"error": problem})
        with self._lock:
            for delivery in deliveries:
                self._holder_of[delivery.receipt] = consumer
        if deliveries:
            self._last_claimed = time.monotonic()
        return deliveries

    def _settled(self, receipt: str) -> None:
        with self._lock:
            consumer = self._holder_of.pop(receipt, None)
        if consumer is not None:
            consumer._settled(receipt)

    def _forget_consumer(self, consumer: SqliteConsumer) -> None:
        with self._lock:
            self._consumers.discard(consumer)

    def _release_receipts(self, receipts: Iterable[str]) -> None:
        now = self._now_ms()
        with self._db.write() as conn:
            for receipt in receipts:
                token, job_id = _split_receipt(receipt)
                conn.execute(
                    sql.RELEASE_JOB,
                    {"now": now, "ns": self.namespace, "id": job_id, "token": token},
                )
        for receipt in receipts:
            self._settled(receipt)

    # -- life cycle ----------

    def close(self) -> None:
        """Stop the sweeper, close every consumer, and release the file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            consumers = list(self._consumers)
        self._sweeper.stop()
        for consumer in consumers:
            consumer.close()
        release_database(self._db)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SqliteBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _in_flight(job_id: str) -> JobInFlight:
    return JobInFlight(
        f"job {job_id!r} is being run by a worker right now (its lease holds); publishing it "
        "again would run it twice. Wait for it to finish, or publish under a new task id"
    )
