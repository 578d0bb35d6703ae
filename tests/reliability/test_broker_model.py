"""A Hypothesis state machine of SqliteBroker, checked against a plain Python model.

The model keeps, per job, what decides its fate: its queue, priority, the instant it
becomes claimable (``visible_at``: its ``not_before`` while it waits, the end of its
lease while it is leased), its lease token, its delivery count, its own lease length
and the envelope stored for it; and, per dead letter, its queue, envelope, reason,
meta and death time. Time comes from a ManualClock handed to the broker, so leases
and delays expire only when the machine advances the clock.

Every rule predicts the broker's answer from the model (a stale receipt: False and
nothing changed), and after every step the counts, the dead-letter listings, the
queue list and the whole job table must match the model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stem_sqlite import Delivery, Envelope, InvalidArgument, JobInFlight, SqliteBroker
from stem_sqlite.timeutil import ManualClock

QUEUES = ("alpha", "beta")
DEFAULT_LEASE_MS = 10_000
RETENTION_MS = 60_000
START = 1_700_000_000.0

queues = st.sampled_from(QUEUES)
priorities = st.integers(-2, 2)
# Delays relative to now, in ms: None (no not_before), in the past, or in the future.
delays = st.one_of(st.none(), st.integers(-5_000, -1), st.integers(0, 20_000))
leases = st.one_of(st.none(), st.integers(1, 20_000))
picks = st.integers(0, 60)


def at_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso_ms(ms: int) -> str:
    value = at_ms(ms)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def token_of(delivery: Delivery) -> str:
    return delivery.receipt.partition(":")[0]


@dataclass
class Job:
    id: str
    queue: str
    priority: int
    visible_at: int
    token: str | None
    delivery_count: int
    lease_ms: int | None
    attempt: int
    seq: int
    envelope: dict[str, Any]  # the envelope as stored (its to_dict())


@dataclass
class Dead:
    id: str
    queue: str
    envelope: dict[str, Any]
    reason: str | None
    meta: dict[str, Any]
    dead_at: int


def not_before_ms(envelope: dict[str, Any]) -> int | None:
    text = envelope["not_before"]
    if text is None:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(value.timestamp() * 1000)


def lease_ms_of(envelope: dict[str, Any]) -> int | None:
    seconds = envelope["visibility_timeout"]
    return round(seconds * 1000) if seconds else None


class BrokerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="stem-model-"))
        self.clock = ManualClock(START)
        self.broker = SqliteBroker.open(
            self.folder / "broker.sqlite",
            default_visibility_timeout=DEFAULT_LEASE_MS / 1000,
            sweeper_interval=0,  # no background sweeps: run_maintenance is a rule
            dead_letter_retention=RETENTION_MS / 1000,
            clock=self.clock,
        )
        self.jobs: dict[str, Job] = {}
        self.dead: dict[str, Dead] = {}
        self.ids: list[str] = []  # every id ever published, for re-publishes
        self.deliveries: list[Delivery] = []  # every delivery handed out, newest last
        self.tokens: set[str] = set()
        self.seq = 0
        self.serial = 0

    def teardown(self) -> None:
        self.broker.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- model helpers ----------

    @property
    def now(self) -> int:
        return round(self.clock.now() * 1000)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def holds(self, delivery: Delivery) -> bool:
        job = self.jobs.get(delivery.id)
        return job is not None and job.token == token_of(delivery)

    def pick(self, index: int) -> Delivery:
        return self.deliveries[-1 - index % len(self.deliveries)]

    def store(self, envelope: dict[str, Any], job: Job | None, seq: int | None = None) -> Job:
        """Insert or replace (in place) a job from the envelope, unleased."""
        now = self.now
        nb = not_before_ms(envelope)
        new = Job(
            id=envelope["id"],
            queue=envelope["queue"],
            priority=envelope["priority"],
            visible_at=nb if nb is not None else now,
            token=None,
            delivery_count=0,
            lease_ms=lease_ms_of(envelope),
            attempt=envelope["attempt"],
            seq=job.seq if job is not None else (seq or self.next_seq()),
            envelope=envelope,
        )
        self.jobs[new.id] = new
        return new

    def dead_sorted(self, queue: str) -> list[Dead]:
        entries = [d for d in self.dead.values() if d.queue == queue]
        return sorted(entries, key=lambda d: (d.dead_at, d.id), reverse=True)

    def new_envelope(
        self, job_id: str, queue: str, priority: int, delay: int | None, lease: int | None
    ) -> Envelope:
        self.serial += 1
        return Envelope(
            name="model.job",
            id=job_id,
            queue=queue,
            priority=priority,
            not_before=None if delay is None else at_ms(self.now + delay),
            enqueued_at=at_ms(self.now),
            visibility_timeout=None if lease is None else lease / 1000,
            kwargs={"serial": self.serial},
        )

    def job_id(self, existing: int | None) -> str:
        if existing is None or not self.ids:
            job_id = f"job-{len(self.ids):03d}"
            self.ids.append(job_id)
            return job_id
        return self.ids[existing % len(self.ids)]

    def blocked(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        return job is not None and job.token is not None and job.visible_at > self.now

    # -- rules ----------

    @rule(
        existing=st.one_of(st.none(), picks),
        queue=queues,
        priority=priorities,
        delay=delays,
        lease=leases,
        route_queue=st.one_of(st.none(), queues),
        route_priority=st.one_of(st.none(), priorities),
    )
    def publish(
        self,
        existing: int | None,
        queue: str,
        priority: int,
        delay: int | None,
        lease: int | None,
        route_queue: str | None,
        route_priority: int | None,
    ) -> None:
        job_id = self.job_id(existing)
        self._publish(job_id, queue, priority, delay, lease, route_queue, route_priority)

    @precondition(lambda self: self.dead)
    @rule(index=picks, queue=queues, priority=priorities, delay=delays)
    def republish_a_dead_letter(
        self, index: int, queue: str, priority: int, delay: int | None
    ) -> None:
        """The id of a dead letter is live again: a replay must leave that entry alone."""
        job_id = sorted(self.dead)[index % len(self.dead)]
        self._publish(job_id, queue, priority, delay, None, None, None)

    def _publish(
        self,
        job_id: str,
        queue: str,
        priority: int,
        delay: int | None,
        lease: int | None,
        route_queue: str | None,
        route_priority: int | None,
    ) -> None:
        envelope = self.new_envelope(job_id, queue, priority, delay, lease)
        stored = envelope.to_dict()
        if route_queue is not None:
            stored["queue"] = route_queue
        if route_priority is not None:
            stored["priority"] = route_priority
        event(f"publish: {'blocked' if self.blocked(job_id) else 'stored'}")
        if self.blocked(job_id):
            with pytest.raises(JobInFlight):
                self.broker.publish(envelope, queue=route_queue, priority=route_priority)
            return
        self.broker.publish(envelope, queue=route_queue, priority=route_priority)
        self.store(stored, self.jobs.get(job_id))

    @rule(
        specs=st.lists(
            st.tuples(st.one_of(st.none(), picks), queues, priorities, delays, leases),
            min_size=1,
            max_size=3,
        )
    )
    def publish_many(self, specs: list[tuple[Any, str, int, int | None, int | None]]) -> None:
        envelopes = [
            self.new_envelope(self.job_id(existing), queue, priority, delay, lease)
            for existing, queue, priority, delay, lease in specs
        ]
        if any(self.blocked(envelope.id) for envelope in envelopes):
            with pytest.raises(JobInFlight):
                self.broker.publish_many(envelopes)
            return  # all or nothing
        self.broker.publish_many(envelopes)
        for envelope in envelopes:
            self.store(envelope.to_dict(), self.jobs.get(envelope.id))

    @rule(queue=queues, prefetch=st.integers(1, 3))
    def claim(self, queue: str, prefetch: int) -> None:
        now = self.now
        ready = [j for j in self.jobs.values() if j.queue == queue and j.visible_at <= now]
        ready.sort(key=lambda j: (-j.priority, j.visible_at, j.seq))
        batch = sorted(ready[:prefetch], key=lambda j: (-j.priority, j.seq))

        consumer = self.broker.consume(queue, prefetch=prefetch)
        got: list[Delivery] = []
        for _ in range(prefetch):
            delivery = consumer.receive(timeout=0)
            if delivery is None:
                break
            got.append(delivery)
        consumer.close()

        assert [d.id for d in got] == [j.id for j in batch]
        event(f"claim: {len(got)} of {prefetch}")
        batch_tokens = {token_of(d) for d in got}
        assert len(batch_tokens) <= 1, "one claim, one lease token"
        assert not batch_tokens & self.tokens, "a lease token was issued twice"
        self.tokens |= batch_tokens
        for delivery, job in zip(got, batch, strict=True):
            job.token = token_of(delivery)
            job.delivery_count += 1
            job.visible_at = now + (job.lease_ms or DEFAULT_LEASE_MS)
            assert delivery.queue == queue
            assert delivery.delivery_count == job.delivery_count
            assert round(delivery.lease_expires_at.timestamp() * 1000) == job.visible_at
            assert delivery.envelope.to_dict() == job.envelope
            self.deliveries.append(delivery)

    @precondition(lambda self: self.deliveries)
    @rule(index=picks)
    def ack(self, index: int) -> None:
        delivery = self.pick(index)
        expected = self.holds(delivery)
        event(f"ack: {'holds' if expected else 'stale'}")
        if expected and self.jobs[delivery.id].visible_at <= self.now:
            event("ack: lease ran out but nobody re-leased the job")
        assert self.broker.ack(delivery) is expected
        if expected:
            del self.jobs[delivery.id]

    @precondition(lambda self: self.deliveries)
    @rule(index=picks, requeue=st.booleans())
    def nack(self, index: int, requeue: bool) -> None:
        delivery = self.pick(index)
        expected = self.holds(delivery)
        assert self.broker.nack(delivery, requeue=requeue) is expected
        if not expected:
            return
        if requeue:
            job = self.jobs[delivery.id]
            job.token = None
            job.visible_at = self.now
        else:
            self._to_dead(delivery.id, "nack", {})

    def _to_dead(self, job_id: str, reason: str | None, meta: dict[str, Any]) -> None:
        event("a job was dead-lettered")
        job = self.jobs.pop(job_id)
        self.dead[job_id] = Dead(job_id, job.queue, job.envelope, reason, meta, self.now)

    @precondition(lambda self: self.deliveries)
    @rule(
        index=picks,
        reason=st.one_of(st.none(), st.sampled_from(["boom", "x'; DROP TABLE stem_jobs; --"])),
        meta=st.one_of(st.none(), st.fixed_dictionaries({"error": st.text(max_size=5)})),
    )
    def dead_letter(self, index: int, reason: str | None, meta: dict[str, Any] | None) -> None:
        delivery = self.pick(index)
        expected = self.holds(delivery)
        assert self.broker.dead_letter(delivery, reason=reason, meta=meta) is expected
        if expected:
            self._to_dead(delivery.id, reason, meta or {})

    @precondition(lambda self: self.deliveries)
    @rule(index=picks, by=st.integers(1, 20_000))
    def extend_lease(self, index: int, by: int) -> None:
        delivery = self.pick(index)
        expected = self.holds(delivery)
        assert self.broker.extend_lease(delivery, by / 1000) is expected
        if expected:
            self.jobs[delivery.id].visible_at = self.now + by

    @precondition(lambda self: self.deliveries)
    @rule(
        index=picks,
        delay=delays,
        queue=st.one_of(st.none(), queues),
        priority=st.one_of(st.none(), priorities),
    )
    def reschedule(
        self, index: int, delay: int | None, queue: str | None, priority: int | None
    ) -> None:
        delivery = self.pick(index)
        changes: dict[str, Any] = {
            "attempt": delivery.envelope.attempt + 1,
            "not_before": None if delay is None else at_ms(self.now + delay),
        }
        if queue is not None:
            changes["queue"] = queue
        if priority is not None:
            changes["priority"] = priority
        envelope = delivery.envelope.with_changes(**changes)
        expected = self.holds(delivery)
        event(f"reschedule: {'holds' if expected else 'stale'}")
        assert self.broker.reschedule(delivery, envelope) is expected
        if expected:
            self.store(envelope.to_dict(), self.jobs[delivery.id])

    @precondition(lambda self: self.deliveries)
    @rule(index=picks)
    def reschedule_under_another_id(self, index: int) -> None:
        delivery = self.pick(index)
        other = delivery.envelope.with_changes(id=delivery.id + "-other")
        with pytest.raises(InvalidArgument):
            self.broker.reschedule(delivery, other)

    @rule(queue=queues)
    def purge(self, queue: str) -> None:
        doomed = [j.id for j in self.jobs.values() if j.queue == queue]
        assert self.broker.purge(queue) == len(doomed)
        for job_id in doomed:
            del self.jobs[job_id]

    @rule(index=picks, limit=st.one_of(st.none(), st.integers(1, 3)))
    def purge_dead_letters(self, index: int, limit: int | None) -> None:
        queue = self.dead_queue(index)
        doomed = self.dead_sorted(queue)[:limit]
        assert self.broker.purge_dead_letters(queue, limit=limit) == len(doomed)
        for entry in doomed:
            del self.dead[entry.id]

    def dead_queue(self, index: int) -> str:
        """A queue that holds dead letters when there is one (else any queue)."""
        holding = sorted({d.queue for d in self.dead.values()}) or list(QUEUES)
        return holding[index % len(holding)]

    @rule(
        index=picks,
        limit=st.integers(1, 4),
        delay=st.one_of(st.none(), st.integers(1, 5_000)),
        dry_run=st.booleans(),
    )
    def replay_dead_letters(self, index: int, limit: int, delay: int | None, dry_run: bool) -> None:
        queue = self.dead_queue(index)
        listed = self.dead_sorted(queue)[:limit]
        result = self.broker.replay_dead_letters(
            queue, limit=limit, delay=None if delay is None else delay / 1000, dry_run=dry_run
        )
        assert result.dry_run is dry_run
        if dry_run:
            assert [e.envelope.id for e in result.entries] == [d.id for d in listed]
            return
        replayed = []
        for entry in listed:
            if entry.id in self.jobs:
                event("replay: id live again, entry kept")
                continue  # a live job has the id: the entry stays dead
            envelope = dict(entry.envelope)
            if delay is not None:
                envelope["not_before"] = iso_ms(self.now + delay)
            envelope["queue"] = queue
            self.store(envelope, None)
            del self.dead[entry.id]
            replayed.append(entry.id)
        assert [e.envelope.id for e in result.entries] == replayed
        event(f"replay: {len(replayed)} of {len(listed)} listed")

    @rule()
    def sweep(self) -> None:
        self.broker.run_maintenance()
        cutoff = self.now - RETENTION_MS
        for job_id in [d.id for d in self.dead.values() if d.dead_at <= cutoff]:
            del self.dead[job_id]

    @rule(by=st.one_of(st.integers(1, 3_000), st.integers(3_000, 70_000)))
    def advance_clock(self, by: int) -> None:
        self.clock.advance(by / 1000)

    @precondition(lambda self: self.deliveries)
    @rule(index=picks)
    def advance_past_a_lease(self, index: int) -> None:
        """Let one delivery's lease run out (its job may then be claimed again)."""
        ends = round(self.pick(index).lease_expires_at.timestamp() * 1000)
        self.clock.advance(max(1, ends - self.now + 1) / 1000)

    # -- invariants ----------

    @invariant()
    def counts_match(self) -> None:
        now = self.now
        for queue in QUEUES:
            jobs = [j for j in self.jobs.values() if j.queue == queue]
            pending = sum(j.visible_at <= now for j in jobs)
            inflight = sum(j.visible_at > now and j.token is not None for j in jobs)
            delayed = sum(j.visible_at > now and j.token is None for j in jobs)
            assert (
                self.broker.pending_count(queue),
                self.broker.inflight_count(queue),
                self.broker.delayed_count(queue),
            ) == (pending, inflight, delayed), queue

    @invariant()
    def dead_letters_match(self) -> None:
        for queue in QUEUES:
            page = self.broker.list_dead_letters(queue, limit=1000)
            assert page.next_offset is None
            seen = [
                (
                    e.envelope.id,
                    e.reason,
                    e.meta,
                    e.envelope.to_dict(),
                    round(e.dead_at.timestamp() * 1000),
                )
                for e in page.entries
            ]
            expected = [
                (d.id, d.reason, d.meta, d.envelope, d.dead_at) for d in self.dead_sorted(queue)
            ]
            assert seen == expected, queue
            assert self.broker.dead_letter_count(queue) == len(expected)
        live = {j.queue for j in self.jobs.values()} | {d.queue for d in self.dead.values()}
        assert self.broker.queues() == sorted(live)

    @invariant()
    def job_table_matches(self) -> None:
        with self.broker.database.read() as conn:
            rows = conn.execute(
                "SELECT id, queue, priority, visible_at, lease_token, delivery_count, lease_ms,"
                " attempt, envelope FROM stem_jobs ORDER BY rowid"
            ).fetchall()
        seen = [(*row[:-1], json.loads(row[-1])) for row in rows]
        expected = [
            (
                j.id,
                j.queue,
                j.priority,
                j.visible_at,
                j.token,
                j.delivery_count,
                j.lease_ms,
                j.attempt,
                j.envelope,
            )
            for j in sorted(self.jobs.values(), key=lambda j: j.seq)
        ]
        assert seen == expected


BrokerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBrokerModel = BrokerMachine.TestCase


def test_model_helpers_agree_with_the_library() -> None:
    """The model's own time formatting must be the broker's, or the machine tests nothing."""
    from stem_sqlite.timeutil import iso

    ms = round(START * 1000) + 12_345
    assert iso_ms(ms) == iso(at_ms(ms))
    assert not_before_ms({"not_before": iso_ms(ms)}) == ms
