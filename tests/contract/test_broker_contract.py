"""The broker contract suite, written once against the public Broker API.

It mirrors the original's ``broker_contract_suite.dart`` (BT-1..BT-15), its SQLite-only
tests (BT-S2, BT-S3 without broadcast), the extra acceptance tests of Appendix A
(A-1, A-3, A-5, A-6) and the Python-specific behaviour of ``api.md`` section 3
(reschedule, JobInFlight, publish_many, dead-letter paging, replay and purge options,
maintenance, prefetch bounds and consumer close).

Every test except the last class uses only the ``engine``/``broker`` fixtures and the
public names of ``stem_sqlite``, so another engine runs it unchanged. Timings are short:
waits poll with a deadline (``wait_for`` or ``receive(timeout=...)``); a timed
``receive`` that must return None is how a test proves that nothing is delivered within
a window (the original suite's "settle" delays).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stem_sqlite import (
    DeadLetterEntry,
    DeadLetterPage,
    Delivery,
    Envelope,
    InvalidPayload,
    JobInFlight,
    ReplayResult,
    StemError,
    UnsupportedOperation,
)
from tests.conftest import wait_for

#: The window in which "nothing arrives" is checked (the original's queueSettleDelay).
SETTLE = 0.15
#: A short lease, set explicitly wherever a test depends on the lease length.
LEASE = 0.3
#: How long a test waits for a delivery that must come (the original's requeueTimeout).
DELIVERY_TIMEOUT = 5.0
#: Slack for comparing our wall clock with times the engine stored (millisecond precision).
CLOCK_SLACK = 0.03


# -- helpers -----------------------------------------------------------------------


def now_utc() -> datetime:
    return datetime.now(UTC)


def envelope(queue: str, name: str = "contract.task", **fields: Any) -> Envelope:
    return Envelope(name=name, queue=queue, **fields)


def expect_delivery(broker: Any, queue: str, *, timeout: float = DELIVERY_TIMEOUT) -> Delivery:
    """Open a prefetch-1 consumer, take one delivery within ``timeout``, close the consumer."""
    with broker.consume(queue) as consumer:
        delivery = consumer.receive(timeout=timeout)
    assert delivery is not None, f"no delivery on {queue!r} within {timeout}s"
    return delivery


def expect_nothing(broker: Any, queue: str, *, window: float = SETTLE) -> None:
    """Prove that no delivery arrives on ``queue`` within ``window`` seconds."""
    with broker.consume(queue) as consumer:
        delivery = consumer.receive(timeout=window)
    assert delivery is None, f"unexpected delivery of {delivery.envelope.id!r} on {queue!r}"


def dead_letter_ids(broker: Any, queue: str, limit: int = 100) -> list[str]:
    return [entry.envelope.id for entry in broker.list_dead_letters(queue, limit=limit).entries]


def wait_until_after(moment: datetime, by: float = 0.003) -> None:
    """Poll the clock until it is at least ``by`` seconds past ``moment``."""
    target = moment + timedelta(seconds=by)
    wait_for(lambda: now_utc() >= target, timeout=5, message=f"clock never passed {target}")


def dead_letter_one(
    broker: Any, queue: str, *, reason: str = "contract", **fields: Any
) -> Envelope:
    """Publish a job, lease it and dead-letter it; return its envelope.

    Waits until the clock has moved past the entry's ``dead_at``, so entries made one
    after another have distinct, increasing ``dead_at`` values.
    """
    env = envelope(queue, **fields)
    broker.publish(env)
    delivery = expect_delivery(broker, queue)
    assert delivery.envelope.id == env.id
    assert broker.dead_letter(delivery, reason=reason) is True
    entry = broker.get_dead_letter(queue, env.id)
    assert entry is not None
    wait_until_after(entry.dead_at)
    return env


def take_over(broker: Any, queue: str) -> tuple[Envelope, Delivery, Delivery]:
    """A job whose first lease expired and was re-leased by a second consumer.

    Returns the envelope, the stale first delivery and the live second delivery.
    """
    env = envelope(queue, args=[1], visibility_timeout=LEASE)
    broker.publish(env)
    first = expect_delivery(broker, queue)
    # The second consumer gets the job only once the first lease has run out.
    second = expect_delivery(broker, queue)
    assert first.envelope.id == second.envelope.id == env.id
    assert first.receipt != second.receipt
    return env, first, second


# -- BT-1 .. BT-15: the original contract suite ----------------------------------------


def test_bt1_publish_consume_ack_removes_the_job(broker: Any) -> None:
    queue = "bt01-ack"
    env = envelope(queue, args=[1, 2], kwargs={"k": "v"}, headers={"h": "1"}, meta={"m": 1})
    broker.publish(env)

    with broker.consume(queue) as consumer:
        delivery = consumer.receive(timeout=DELIVERY_TIMEOUT)
        assert delivery is not None
        assert delivery.envelope.id == env.id
        assert delivery.queue == queue
        assert delivery.envelope.name == env.name
        assert list(delivery.envelope.args) == [1, 2]
        assert delivery.envelope.kwargs == {"k": "v"}
        assert delivery.envelope.headers == {"h": "1"}
        assert delivery.envelope.meta == {"m": 1}
        assert delivery.lease_expires_at.tzinfo is not None
        assert broker.ack(delivery) is True
        assert consumer.receive(timeout=5 * SETTLE) is None

    assert broker.pending_count(queue) == 0
    assert broker.inflight_count(queue) == 0
    # A repeated ack is a no-op that reports it did nothing.
    assert broker.ack(delivery) is False


def test_bt2_publish_respects_routing_queue_override(broker: Any) -> None:
    original, routed = "bt02-original", "bt02-routed"
    env = envelope(original)
    broker.publish(env, queue=routed)

    delivery = expect_delivery(broker, routed)
    assert delivery.envelope.id == env.id
    assert delivery.queue == routed
    assert delivery.envelope.queue == routed
    expect_nothing(broker, original, window=3 * SETTLE)
    assert broker.pending_count(original) == 0
    assert broker.ack(delivery) is True


def test_bt2_publish_respects_routing_priority_override(broker: Any) -> None:
    queue = "bt02-priority"
    broker.publish(envelope(queue, priority=1), priority=7)
    delivery = expect_delivery(broker, queue)
    assert delivery.envelope.priority == 7
    assert broker.ack(delivery) is True


def test_bt3_pending_and_inflight_counts_track_the_delivery_lifecycle(broker: Any) -> None:
    queue = "bt03-counts"
    broker.publish(envelope(queue))
    wait_for(lambda: broker.pending_count(queue) == 1, timeout=5 * SETTLE)
    assert broker.inflight_count(queue) == 0

    with broker.consume(queue) as consumer:
        delivery = consumer.receive(timeout=DELIVERY_TIMEOUT)
        assert delivery is not None
        wait_for(lambda: broker.inflight_count(queue) == 1, timeout=5 * SETTLE)
        assert broker.pending_count(queue) == 0
        assert broker.ack(delivery) is True
        wait_for(lambda: broker.inflight_count(queue) == 0, timeout=5 * SETTLE)
    assert broker.pending_count(queue) == 0
    assert broker.delayed_count(queue) == 0


def test_bt4_nack_with_requeue_redelivers_on_the_same_consumer(broker: Any) -> None:
    queue = "bt04-nack-requeue"
    env = envelope(queue, attempt=1)
    broker.publish(env)

    with broker.consume(queue) as consumer:
        first = consumer.receive(timeout=DELIVERY_TIMEOUT)
        assert first is not None
        assert broker.nack(first) is True
        again = consumer.receive(timeout=DELIVERY_TIMEOUT)
        assert again is not None
        assert again.envelope.id == env.id
        assert again.envelope.attempt == 1  # nack does not rewrite the envelope
        assert again.receipt != first.receipt
        # The first receipt no longer holds the job.
        assert broker.ack(first) is False
        assert broker.inflight_count(queue) == 1
        assert broker.ack(again) is True
    assert broker.pending_count(queue) == 0


def test_bt5_nack_without_requeue_does_not_redeliver(broker: Any) -> None:
    queue = "bt05-nack-no-requeue"
    env = envelope(queue)
    broker.publish(env)
    delivery = expect_delivery(broker, queue)
    assert broker.nack(delivery, requeue=False) is True

    expect_nothing(broker, queue, window=4 * SETTLE)
    assert broker.pending_count(queue) == 0
    assert broker.inflight_count(queue) == 0
    entry = broker.get_dead_letter(queue, env.id)
    assert entry is not None
    assert entry.reason == "nack"


def test_bt6_dead_letter_moves_the_job_to_the_dead_letter_store(broker: Any) -> None:
    queue = "bt06-dead-letter"
    env = envelope(queue)
    broker.publish(env)
    delivery = expect_delivery(broker, queue)
    assert broker.dead_letter(delivery, reason="contract-test") is True

    wait_for(lambda: env.id in dead_letter_ids(broker, queue, limit=10), timeout=5 * SETTLE)
    assert broker.pending_count(queue) == 0
    assert broker.inflight_count(queue) == 0
    # The job is gone: the same delivery cannot act on it any more.
    assert broker.dead_letter(delivery, reason="again") is False
    assert broker.get_dead_letter(queue, env.id).reason == "contract-test"


def test_bt7_dead_letter_entries_are_retrievable_and_purgeable(broker: Any) -> None:
    queue = "bt07-get-purge"
    env = envelope(queue, args=["x"], kwargs={"y": 2})
    broker.publish(env)
    delivery = expect_delivery(broker, queue)
    before = now_utc()
    meta = {"source": "contract", "severity": "low"}
    assert broker.dead_letter(delivery, reason="contract-get", meta=meta) is True

    entry = broker.get_dead_letter(queue, env.id)
    assert isinstance(entry, DeadLetterEntry)
    assert entry.envelope.id == env.id
    assert entry.envelope.name == env.name
    assert list(entry.envelope.args) == ["x"]
    assert entry.envelope.kwargs == {"y": 2}
    assert entry.reason == "contract-get"
    assert entry.meta == meta
    assert entry.dead_at.tzinfo is not None
    assert entry.dead_at >= before - timedelta(seconds=CLOCK_SLACK)

    assert broker.purge_dead_letters(queue) == 1
    assert broker.list_dead_letters(queue, limit=1).entries == []
    assert broker.get_dead_letter(queue, env.id) is None


def test_bt8_dead_letter_and_replay_requeues_the_job(broker: Any) -> None:
    queue = "bt08-replay"
    env = dead_letter_one(broker, queue, attempt=2, args=[42])

    dry = broker.replay_dead_letters(queue, limit=10, dry_run=True)
    assert isinstance(dry, ReplayResult)
    assert dry.dry_run is True
    assert [e.envelope.id for e in dry.entries] == [env.id]
    assert broker.get_dead_letter(queue, env.id) is not None
    assert broker.pending_count(queue) == 0

    result = broker.replay_dead_letters(queue, limit=10)
    assert result.dry_run is False
    assert env.id in [e.envelope.id for e in result.entries]
    assert result.count == 1
    assert broker.get_dead_letter(queue, env.id) is None

    delivery = expect_delivery(broker, queue, timeout=2 * DELIVERY_TIMEOUT)
    assert delivery.envelope.id == env.id
    assert delivery.envelope.attempt == 2  # replay does not reset the attempt
    assert list(delivery.envelope.args) == [42]
    assert broker.ack(delivery) is True


def test_bt9_replay_respects_delay_scheduling(broker: Any) -> None:
    queue = "bt09-replay-delay"
    delay = 4 * SETTLE
    env = dead_letter_one(broker, queue)

    started = time.time()
    result = broker.replay_dead_letters(queue, limit=10, delay=delay)
    assert result.dry_run is False
    assert [e.envelope.id for e in result.entries] == [env.id]
    assert broker.delayed_count(queue) == 1
    assert broker.pending_count(queue) == 0

    with broker.consume(queue) as consumer:
        assert consumer.receive(timeout=delay / 2) is None
        delivery = consumer.receive(timeout=DELIVERY_TIMEOUT)
    assert delivery is not None
    assert delivery.envelope.id == env.id
    assert time.time() - started >= delay - CLOCK_SLACK
    assert broker.ack(delivery) is True


def test_bt9_replay_delay_accepts_a_timedelta(broker: Any) -> None:
    queue = "bt09-replay-timedelta"
    env = dead_letter_one(broker, queue)
    result = broker.replay_dead_letters(queue, delay=timedelta(seconds=30))
    assert [e.envelope.id for e in result.entries] == [env.id]
    assert broker.delayed_count(queue) == 1
    assert broker.pending_count(queue) == 0


def test_bt10_concurrent_subscriptions_do_not_block_publish(broker: Any) -> None:
    queue_a, queue_b = "bt10-a", "bt10-b"
    results: dict[str, Delivery | None] = {}
    started = threading.Barrier(3)

    def listen(queue: str, consumer: Any) -> None:
        started.wait()
        results[queue] = consumer.receive(timeout=DELIVERY_TIMEOUT)

    with broker.consume(queue_a) as consumer_a, broker.consume(queue_b) as consumer_b:
        threads = [
            threading.Thread(target=listen, args=(queue_a, consumer_a)),
            threading.Thread(target=listen, args=(queue_b, consumer_b)),
        ]
        for thread in threads:
            thread.start()
        started.wait()
        env = envelope(queue_b)
        began = time.monotonic()
        broker.publish(env)
        assert time.monotonic() - began < 1.0
        threads[1].join(timeout=DELIVERY_TIMEOUT + 1)
        assert not threads[1].is_alive()
        consumer_a.close()  # ends the receive() of queue A at once
        threads[0].join(timeout=DELIVERY_TIMEOUT + 1)
        assert not threads[0].is_alive()

    delivery = results[queue_b]
    assert delivery is not None
    assert delivery.envelope.id == env.id
    assert results[queue_a] is None
    assert broker.ack(delivery) is True


def test_bt11_purge_removes_jobs_and_creates_no_dead_letters(broker: Any) -> None:
    queue = "bt11-purge"
    broker.publish(envelope(queue))
    broker.publish(envelope(queue, not_before=now_utc() + timedelta(seconds=30)))
    leased = envelope(queue, visibility_timeout=30)
    broker.publish(leased, priority=5)
    delivery = expect_delivery(broker, queue)
    assert delivery.envelope.id == leased.id

    assert broker.purge(queue) == 3
    assert broker.pending_count(queue) == 0
    assert broker.delayed_count(queue) == 0
    assert broker.inflight_count(queue) == 0
    assert broker.purge_dead_letters(queue) == 0
    # The purged job's lease is gone with it.
    assert broker.ack(delivery) is False


def test_bt11_purge_keeps_existing_dead_letters(broker: Any) -> None:
    queue = "bt11-purge-keeps-dlq"
    dead = dead_letter_one(broker, queue)
    broker.publish(envelope(queue))

    assert broker.purge(queue) == 1
    assert broker.pending_count(queue) == 0
    assert dead_letter_ids(broker, queue) == [dead.id]


def test_bt12_extend_lease_delays_redelivery_until_the_extended_deadline(engine: Any) -> None:
    queue = "bt12-extend"
    extension = 2 * LEASE
    with engine.broker(default_visibility_timeout=LEASE) as broker:
        env = envelope(queue)
        broker.publish(env)
        first = expect_delivery(broker, queue)
        assert broker.extend_lease(first, extension) is True
        extended_at = time.monotonic()

        # The original lease would have ended LEASE after the claim; the extended one
        # holds until `extension` after the call.
        expect_nothing(broker, queue, window=LEASE + SETTLE / 2)
        second = expect_delivery(broker, queue, timeout=DELIVERY_TIMEOUT)
        assert second.envelope.id == env.id
        assert time.monotonic() - extended_at >= extension - CLOCK_SLACK
        assert broker.ack(first) is False
        assert broker.ack(second) is True


def test_bt12_extend_lease_counts_from_now_not_from_the_old_deadline(broker: Any) -> None:
    queue = "bt12-extend-from-now"
    env = envelope(queue, visibility_timeout=30)
    broker.publish(env)
    first = expect_delivery(broker, queue)
    # A short extension shortens a long lease: the lease now ends `LEASE` from now.
    assert broker.extend_lease(first, timedelta(seconds=LEASE)) is True
    second = expect_delivery(broker, queue, timeout=LEASE + 2.0)
    assert second.envelope.id == env.id
    assert broker.ack(second) is True


def test_bt13_unacked_job_becomes_visible_again_after_its_lease(broker: Any) -> None:
    queue = "bt13-lease-expiry"
    env = envelope(queue, visibility_timeout=LEASE)
    broker.publish(env)
    first = expect_delivery(broker, queue)
    taken_at = time.monotonic()

    second = expect_delivery(broker, queue, timeout=DELIVERY_TIMEOUT)
    assert second.envelope.id == env.id
    assert second.receipt != first.receipt
    assert time.monotonic() - taken_at >= LEASE - CLOCK_SLACK
    assert broker.ack(second) is True


def test_bt14_delayed_job_is_not_visible_until_its_time(broker: Any) -> None:
    queue = "bt14-delayed"
    delay = 4 * SETTLE
    not_before = now_utc() + timedelta(seconds=delay)
    env = envelope(queue, not_before=not_before)
    broker.publish(env)

    assert broker.pending_count(queue) == 0
    assert broker.delayed_count(queue) == 1
    with broker.consume(queue) as consumer:
        assert consumer.receive(timeout=delay / 2) is None
        delivery = consumer.receive(timeout=DELIVERY_TIMEOUT)
    assert delivery is not None
    assert delivery.envelope.id == env.id
    assert now_utc() >= not_before - timedelta(seconds=CLOCK_SLACK)
    assert broker.delayed_count(queue) == 0
    assert broker.ack(delivery) is True


def test_bt15_priority_ordering_surfaces_higher_priority_first(broker: Any) -> None:
    queue = "bt15-priority"
    low = envelope(queue, priority=1)
    high = envelope(queue, priority=9)
    broker.publish(low, priority=1)
    broker.publish(high, priority=9)

    with broker.consume(queue, prefetch=2) as consumer:
        first = consumer.receive(timeout=DELIVERY_TIMEOUT)
        second = consumer.receive(timeout=DELIVERY_TIMEOUT)
    assert first is not None and second is not None
    assert [first.envelope.id, second.envelope.id] == [high.id, low.id]
    assert broker.ack(first) is True
    assert broker.ack(second) is True


def test_envelope_priority_orders_delivery_with_fifo_among_equals(broker: Any) -> None:
    queue = "priority-envelope-order"
    published = [
        envelope(queue, priority=0, args=["p0"]),
        envelope(queue, priority=5, args=["p5-first"]),
        envelope(queue, priority=-1, args=["p-1"]),
        envelope(queue, priority=5, args=["p5-second"]),
        envelope(queue, priority=10, args=["p10"]),
    ]
    for env in published:
        broker.publish(env)

    order = []
    # Prefetch 1: each claim must pick the best job of those still waiting.
    with broker.consume(queue, prefetch=1) as consumer:
        for _ in published:
            delivery = consumer.receive(timeout=DELIVERY_TIMEOUT)
            assert delivery is not None
            order.append(delivery.envelope.args[0])
            assert broker.ack(delivery) is True
    assert order == ["p10", "p5-first", "p5-second", "p0", "p-1"]


def test_capabilities_are_advertised(broker: Any) -> None:
    assert broker.supports_delayed is True
    assert broker.supports_priority is True


# -- BT-S2, BT-S3: SQLite-only tests of the original, written engine-neutrally ---------


def test_bts2_namespace_isolates_queue_data(engine: Any) -> None:
    queue = "bts2-namespace"
    with engine.broker(namespace="a") as broker_a, engine.broker(namespace="b") as broker_b:
        env = envelope(queue)
        broker_a.publish(env)
        assert broker_a.pending_count(queue) == 1
        assert broker_b.pending_count(queue) == 0
        assert queue in broker_a.queues()
        assert queue not in broker_b.queues()
        expect_nothing(broker_b, queue)

        delivery = expect_delivery(broker_a, queue)
        assert delivery.envelope.id == env.id
        assert broker_b.inflight_count(queue) == 0
        assert broker_a.dead_letter(delivery, reason="ns") is True
        assert dead_letter_ids(broker_a, queue) == [env.id]
        assert dead_letter_ids(broker_b, queue) == []
        assert broker_b.get_dead_letter(queue, env.id) is None
        assert broker_b.purge_dead_letters(queue) == 0
        assert broker_a.get_dead_letter(queue, env.id) is not None


def test_bts3_broadcast_looking_id_lease_is_a_normal_queue_job(broker: Any) -> None:
    queue = "bts3-lease"
    broker.publish(envelope(queue, id="broadcast:lease"))
    delivery = expect_delivery(broker, queue)
    assert delivery.envelope.id == "broadcast:lease"
    assert broker.extend_lease(delivery, 5) is True
    assert broker.inflight_count(queue) == 1
    assert broker.ack(delivery) is True
    assert broker.pending_count(queue) == 0
    assert broker.inflight_count(queue) == 0


def test_bts3_broadcast_looking_id_nack_redelivers(broker: Any) -> None:
    queue = "bts3-nack"
    broker.publish(envelope(queue, id="broadcast:nack"))
    with broker.consume(queue) as consumer:
        first = consumer.receive(timeout=DELIVERY_TIMEOUT)
        assert first is not None
        assert broker.nack(first) is True
        again = consumer.receive(timeout=DELIVERY_TIMEOUT)
    assert again is not None
    assert again.envelope.id == "broadcast:nack"
    assert broker.ack(again) is True


def test_bts3_broadcast_looking_id_dead_letter_reaches_the_store(broker: Any) -> None:
    queue = "bts3-deadletter"
    broker.publish(envelope(queue, id="broadcast:deadletter"))
    delivery = expect_delivery(broker, queue)
    assert broker.dead_letter(delivery, reason="contract") is True
    assert "broadcast:deadletter" in dead_letter_ids(broker, queue)
    assert broker.pending_count(queue) == 0


def test_bts3_broadcast_looking_id_nack_without_requeue_reaches_the_store(broker: Any) -> None:
    queue = "bts3-nack-no-requeue"
    broker.publish(envelope(queue, id="broadcast:nack-no-requeue"))
    delivery = expect_delivery(broker, queue)
    assert broker.nack(delivery, requeue=False) is True
    entry = broker.get_dead_letter(queue, "broadcast:nack-no-requeue")
    assert entry is not None
    assert entry.reason == "nack"


# -- Appendix A --------------------------------------------------------------------


def test_a1_dead_lettering_the_same_id_twice_keeps_one_entry(broker: Any) -> None:
    queue = "a1-dead-twice"
    first = envelope(queue, id="a1-job", args=[1])
    broker.publish(first)
    assert broker.nack(expect_delivery(broker, queue), requeue=False) is True

    second = envelope(queue, id="a1-job", args=[2])
    broker.publish(second)
    delivery = expect_delivery(broker, queue)
    assert list(delivery.envelope.args) == [2]
    assert broker.nack(delivery, requeue=False) is True

    page = broker.list_dead_letters(queue, limit=10)
    assert [e.envelope.id for e in page.entries] == ["a1-job"]
    assert list(page.entries[0].envelope.args) == [2]
    assert page.entries[0].reason == "nack"
    assert broker.pending_count(queue) == 0
    assert broker.inflight_count(queue) == 0


def test_a3_stale_receipt_cannot_ack_a_job_leased_again(broker: Any) -> None:
    queue = "a3-stale-ack"
    env, stale, live = take_over(broker, queue)

    assert broker.ack(stale) is False
    assert broker.inflight_count(queue) == 1
    assert broker.pending_count(queue) == 0
    assert broker.nack(stale) is False
    assert broker.inflight_count(queue) == 1
    assert broker.dead_letter(stale, reason="stale") is False
    assert broker.get_dead_letter(queue, env.id) is None
    assert broker.inflight_count(queue) == 1
    # The second consumer still holds the job.
    assert broker.ack(live) is True
    assert broker.inflight_count(queue) == 0
    assert broker.pending_count(queue) == 0


def test_extend_lease_with_a_stale_receipt_returns_false(broker: Any) -> None:
    queue = "stale-extend"
    env, stale, live = take_over(broker, queue)

    assert broker.extend_lease(stale, 30) is False
    # The live lease was not stretched to 30 s: it runs out after LEASE as before.
    third = expect_delivery(broker, queue, timeout=DELIVERY_TIMEOUT)
    assert third.envelope.id == env.id
    assert broker.ack(live) is False
    assert broker.ack(third) is True


def test_a5_same_id_in_two_namespaces_exists_independently(engine: Any) -> None:
    queue = "a5-same-id"
    with engine.broker(namespace="a") as broker_a, engine.broker(namespace="b") as broker_b:
        broker_a.publish(envelope(queue, id="shared-id", args=["a"]))
        broker_b.publish(envelope(queue, id="shared-id", args=["b"]))
        assert broker_a.pending_count(queue) == 1
        assert broker_b.pending_count(queue) == 1

        in_a = expect_delivery(broker_a, queue)
        assert list(in_a.envelope.args) == ["a"]
        # Leasing in A does not lease B's job, and acking it does not delete B's job.
        assert broker_b.pending_count(queue) == 1
        assert broker_a.ack(in_a) is True
        assert broker_b.pending_count(queue) == 1

        in_b = expect_delivery(broker_b, queue)
        assert in_b.envelope.id == "shared-id"
        assert list(in_b.envelope.args) == ["b"]
        assert broker_b.dead_letter(in_b, reason="b") is True
        assert broker_a.get_dead_letter(queue, "shared-id") is None
        assert broker_b.get_dead_letter(queue, "shared-id") is not None


def test_a6_prefetch_bounds_unsettled_deliveries(broker: Any) -> None:
    queue = "a6-prefetch"
    broker.publish_many([envelope(queue, args=[i], visibility_timeout=30) for i in range(10)])

    with broker.consume(queue, prefetch=2) as consumer:
        first = consumer.receive(timeout=DELIVERY_TIMEOUT)
        second = consumer.receive(timeout=DELIVERY_TIMEOUT)
        assert first is not None and second is not None
        assert consumer.receive(timeout=SETTLE) is None
        assert broker.inflight_count(queue) == 2
        assert broker.pending_count(queue) == 8

        # Settling one makes room for exactly one more.
        assert broker.ack(first) is True
        third = consumer.receive(timeout=DELIVERY_TIMEOUT)
        assert third is not None
        assert third.envelope.id not in {first.envelope.id, second.envelope.id}
        assert consumer.receive(timeout=SETTLE) is None
        assert broker.inflight_count(queue) == 2
        assert broker.pending_count(queue) == 7


# -- publishing --------------------------------------------------------------------


def test_publish_many_stores_every_envelope(broker: Any) -> None:
    queue = "publish-many"
    envelopes = [envelope(queue, args=[i]) for i in range(3)]
    broker.publish_many(envelopes)
    assert broker.pending_count(queue) == 3

    received = []
    with broker.consume(queue, prefetch=3) as consumer:
        for _ in envelopes:
            delivery = consumer.receive(timeout=DELIVERY_TIMEOUT)
            assert delivery is not None
            received.append(delivery.envelope.id)
            assert broker.ack(delivery) is True
    assert received == [env.id for env in envelopes]
    broker.publish_many([])  # nothing to do, no error


def test_publish_many_is_all_or_nothing_when_one_id_is_leased(broker: Any) -> None:
    queue = "publish-many-atomic"
    busy = envelope(queue, id="busy", args=["original"], visibility_timeout=30)
    broker.publish(busy)
    held = expect_delivery(broker, queue)

    batch = [
        envelope(queue, args=["before"]),
        envelope(queue, id="busy", args=["replacement"]),
        envelope(queue, args=["after"]),
    ]
    with pytest.raises(JobInFlight):
        broker.publish_many(batch)

    assert broker.pending_count(queue) == 0
    assert broker.delayed_count(queue) == 0
    assert broker.inflight_count(queue) == 1
    assert broker.ack(held) is True
    assert broker.pending_count(queue) == 0


def test_publish_many_with_a_non_json_value_stores_nothing(broker: Any) -> None:
    queue = "publish-many-bad-json"
    batch = [envelope(queue, args=[1]), envelope(queue, kwargs={"bad": object()})]
    with pytest.raises(TypeError):
        broker.publish_many(batch)
    assert broker.pending_count(queue) == 0
    assert queue not in broker.queues()


def test_publish_rejects_a_non_json_value(broker: Any) -> None:
    queue = "publish-bad-json"
    with pytest.raises(TypeError, match="bad"):
        broker.publish(envelope(queue, kwargs={"bad": {1, 2}}))
    assert broker.pending_count(queue) == 0


def test_republishing_a_pending_id_replaces_it_in_place(broker: Any) -> None:
    queue = "republish-pending"
    broker.publish(envelope(queue, id="same", args=["old"]))
    broker.publish(envelope(queue, id="same", args=["new"]))
    assert broker.pending_count(queue) == 1

    with broker.consume(queue) as consumer:
        delivery = consumer.receive(timeout=DELIVERY_TIMEOUT)
        assert delivery is not None
        assert delivery.envelope.id == "same"
        assert list(delivery.envelope.args) == ["new"]
        assert broker.ack(delivery) is True
        assert consumer.receive(timeout=SETTLE) is None


def test_republishing_a_pending_id_can_delay_it(broker: Any) -> None:
    queue = "republish-delay"
    broker.publish(envelope(queue, id="later"))
    broker.publish(envelope(queue, id="later", not_before=now_utc() + timedelta(seconds=30)))
    assert broker.pending_count(queue) == 0
    assert broker.delayed_count(queue) == 1


def test_republishing_a_leased_id_raises_and_keeps_the_lease(broker: Any) -> None:
    queue = "republish-leased"
    broker.publish(envelope(queue, id="running", args=["original"], visibility_timeout=30))
    held = expect_delivery(broker, queue)

    with pytest.raises(JobInFlight) as caught:
        broker.publish(envelope(queue, id="running", args=["replacement"]))
    assert isinstance(caught.value, StemError)

    assert broker.inflight_count(queue) == 1
    assert broker.pending_count(queue) == 0
    expect_nothing(broker, queue)
    assert broker.extend_lease(held, 30) is True
    assert broker.ack(held) is True
    assert broker.pending_count(queue) == 0
    assert broker.inflight_count(queue) == 0


# -- reschedule (the retry primitive) -----------------------------------------------


def test_reschedule_stores_the_new_attempt_and_redelivers_after_not_before(broker: Any) -> None:
    queue = "reschedule"
    env = envelope(queue, args=["x"], max_retries=3)
    broker.publish(env)
    first = expect_delivery(broker, queue)
    assert first.envelope.attempt == 0

    delay = 2 * LEASE
    not_before = now_utc() + timedelta(seconds=delay)
    retry = replace(first.envelope, attempt=1, not_before=not_before, meta={"why": "retry"})
    assert broker.reschedule(first, retry) is True

    # The old receipt no longer acts on the job, and the job waits for its time.
    assert broker.ack(first) is False
    assert broker.inflight_count(queue) == 0
    assert broker.pending_count(queue) == 0
    assert broker.delayed_count(queue) == 1

    with broker.consume(queue) as consumer:
        assert consumer.receive(timeout=delay / 2) is None
        again = consumer.receive(timeout=DELIVERY_TIMEOUT)
    assert again is not None
    assert now_utc() >= not_before - timedelta(seconds=CLOCK_SLACK)
    assert again.envelope.id == env.id
    assert again.envelope.attempt == first.envelope.attempt + 1
    assert again.envelope.meta == {"why": "retry"}
    assert list(again.envelope.args) == ["x"]
    assert again.receipt != first.receipt
    assert broker.ack(again) is True
    assert broker.pending_count(queue) == 0
    assert broker.delayed_count(queue) == 0


def test_reschedule_with_a_stale_receipt_changes_nothing(broker: Any) -> None:
    queue = "reschedule-stale"
    env, stale, live = take_over(broker, queue)
    later = now_utc() + timedelta(seconds=30)
    retry = replace(env, attempt=5, not_before=later, args=("changed",))

    assert broker.reschedule(stale, retry) is False
    assert broker.inflight_count(queue) == 1
    assert broker.delayed_count(queue) == 0
    assert broker.pending_count(queue) == 0

    # The live holder still owns the unchanged job.
    assert broker.nack(live) is True
    again = expect_delivery(broker, queue)
    assert again.envelope.attempt == 0
    assert list(again.envelope.args) == [1]
    assert broker.ack(again) is True


# -- counts and queues ---------------------------------------------------------------


def test_delayed_count_counts_only_jobs_waiting_for_their_time(broker: Any) -> None:
    queue = "delayed-count"
    broker.publish(envelope(queue, not_before=now_utc() + timedelta(seconds=30)))
    broker.publish(envelope(queue, not_before=now_utc() + timedelta(seconds=60)))
    ready = envelope(queue, visibility_timeout=30)
    broker.publish(ready)
    assert broker.delayed_count(queue) == 2
    assert broker.pending_count(queue) == 1
    assert broker.inflight_count(queue) == 0

    delivery = expect_delivery(broker, queue)
    assert delivery.envelope.id == ready.id
    assert broker.delayed_count(queue) == 2  # a leased job is in flight, not delayed
    assert broker.inflight_count(queue) == 1
    assert broker.pending_count(queue) == 0
    assert broker.delayed_count("delayed-count-other") == 0


def test_queues_lists_queues_with_jobs_or_dead_letters(engine: Any, broker: Any) -> None:
    with_jobs, with_dead = "queues-jobs", "queues-dead"
    broker.publish(envelope(with_jobs))
    dead_letter_one(broker, with_dead)

    listed = broker.queues()
    assert with_jobs in listed
    assert with_dead in listed
    with engine.broker(namespace="queues-elsewhere") as other:
        assert with_jobs not in other.queues()
        assert with_dead not in other.queues()

    broker.purge(with_jobs)
    broker.purge_dead_letters(with_dead)
    listed = broker.queues()
    assert with_jobs not in listed
    assert with_dead not in listed


# -- dead-letter store ------------------------------------------------------------------


def test_list_dead_letters_pages_newest_first(broker: Any) -> None:
    queue = "dlq-paging"
    ids = [dead_letter_one(broker, queue, args=[i]).id for i in range(5)]
    newest_first = list(reversed(ids))

    page = broker.list_dead_letters(queue, limit=2)
    assert isinstance(page, DeadLetterPage)
    assert [e.envelope.id for e in page.entries] == newest_first[:2]
    assert page.next_offset == 2
    assert page.has_more is True

    page = broker.list_dead_letters(queue, limit=2, offset=page.next_offset)
    assert [e.envelope.id for e in page.entries] == newest_first[2:4]
    assert page.next_offset == 4

    page = broker.list_dead_letters(queue, limit=2, offset=page.next_offset)
    assert [e.envelope.id for e in page.entries] == newest_first[4:]
    assert page.next_offset is None
    assert page.has_more is False

    everything = broker.list_dead_letters(queue, limit=50).entries
    assert [e.envelope.id for e in everything] == newest_first
    stamps = [e.dead_at for e in everything]
    assert stamps == sorted(stamps, reverse=True)
    assert broker.list_dead_letters(queue, limit=10, offset=10).entries == []


@pytest.mark.parametrize("limit", [0, -1])
def test_list_dead_letters_with_limit_zero_or_less_is_an_empty_page(
    broker: Any, limit: int
) -> None:
    queue = f"dlq-empty-limit{limit}"
    dead_letter_one(broker, queue)
    page = broker.list_dead_letters(queue, limit=limit)
    assert page.entries == []
    assert page.next_offset is None


def test_get_dead_letter_returns_none_when_missing(broker: Any) -> None:
    queue = "dlq-get-missing"
    assert broker.get_dead_letter(queue, "no-such-id") is None
    env = dead_letter_one(broker, queue)
    assert broker.get_dead_letter(queue, env.id) is not None
    assert broker.get_dead_letter(queue, "no-such-id") is None
    assert broker.get_dead_letter("dlq-get-missing-other", env.id) is None


def test_replay_dry_run_changes_nothing(broker: Any) -> None:
    queue = "replay-dry-run"
    ids = [dead_letter_one(broker, queue).id for _ in range(2)]

    result = broker.replay_dead_letters(queue, dry_run=True)
    assert result.dry_run is True
    assert sorted(e.envelope.id for e in result.entries) == sorted(ids)
    assert sorted(dead_letter_ids(broker, queue)) == sorted(ids)
    assert broker.pending_count(queue) == 0
    assert broker.delayed_count(queue) == 0


def test_replay_since_replays_only_newer_entries(broker: Any) -> None:
    queue = "replay-since"
    old = dead_letter_one(broker, queue)
    cutoff = now_utc()
    wait_until_after(cutoff)
    new = [dead_letter_one(broker, queue).id for _ in range(2)]

    result = broker.replay_dead_letters(queue, since=cutoff)
    assert result.dry_run is False
    assert sorted(e.envelope.id for e in result.entries) == sorted(new)
    assert dead_letter_ids(broker, queue) == [old.id]
    assert broker.pending_count(queue) == 2


def test_replay_limit_replays_the_newest_entries(broker: Any) -> None:
    queue = "replay-limit"
    ids = [dead_letter_one(broker, queue).id for _ in range(3)]

    result = broker.replay_dead_letters(queue, limit=2)
    assert result.dry_run is False
    assert [e.envelope.id for e in result.entries] == [ids[2], ids[1]]
    assert dead_letter_ids(broker, queue) == [ids[0]]
    assert broker.pending_count(queue) == 2


def test_replay_of_an_empty_store_reports_a_real_run(broker: Any) -> None:
    queue = "replay-empty"
    result = broker.replay_dead_letters(queue)
    assert result.entries == []
    assert result.dry_run is False
    assert broker.replay_dead_letters(queue, dry_run=True).dry_run is True


def test_purge_dead_letters_honours_since_and_limit_together(broker: Any) -> None:
    queue = "dlq-purge-since-limit"
    old = [dead_letter_one(broker, queue).id for _ in range(2)]
    cutoff = now_utc()
    wait_until_after(cutoff)
    new = [dead_letter_one(broker, queue).id for _ in range(3)]

    # The newest two of the entries since the cutoff.
    assert broker.purge_dead_letters(queue, since=cutoff, limit=2) == 2
    assert dead_letter_ids(broker, queue) == [new[0], old[1], old[0]]

    # A limit larger than what matches still keeps to `since`.
    assert broker.purge_dead_letters(queue, since=cutoff, limit=10) == 1
    assert dead_letter_ids(broker, queue) == [old[1], old[0]]

    assert broker.purge_dead_letters(queue, limit=1) == 1
    assert dead_letter_ids(broker, queue) == [old[0]]
    assert broker.purge_dead_letters(queue) == 1
    assert dead_letter_ids(broker, queue) == []


def test_run_maintenance_drops_dead_letters_past_retention(engine: Any) -> None:
    queue = "maintenance-retention"
    retention = 0.3
    with engine.broker(dead_letter_retention=retention, sweeper_interval=0) as broker:
        old = dead_letter_one(broker, queue)
        old_entry = broker.get_dead_letter(queue, old.id)
        wait_until_after(old_entry.dead_at, by=retention + 0.05)
        fresh = dead_letter_one(broker, queue)
        job = envelope(queue)
        broker.publish(job)

        assert sorted(dead_letter_ids(broker, queue)) == sorted([old.id, fresh.id])
        broker.run_maintenance()
        assert dead_letter_ids(broker, queue) == [fresh.id]
        assert broker.pending_count(queue) == 1  # jobs are not touched


# -- consumers and life cycle ----------------------------------------------------------


def test_consumer_close_releases_claimed_but_unsent_jobs_at_once(broker: Any) -> None:
    queue = "consumer-close-release"
    broker.publish_many([envelope(queue, args=[i], visibility_timeout=30) for i in range(5)])

    consumer = broker.consume(queue, prefetch=5)
    handed_out = consumer.receive(timeout=DELIVERY_TIMEOUT)
    assert handed_out is not None
    consumer.close()

    # No waiting: the four jobs never handed out are pending again straight away.
    assert broker.pending_count(queue) == 4
    assert broker.inflight_count(queue) == 1
    assert consumer.receive(timeout=0) is None
    consumer.close()  # idempotent

    with broker.consume(queue, prefetch=4) as other:
        rest = [other.receive(timeout=DELIVERY_TIMEOUT) for _ in range(4)]
    assert all(d is not None for d in rest)
    assert handed_out.envelope.id not in {d.envelope.id for d in rest}
    # The delivery handed out before close is still held and can be settled.
    assert broker.ack(handed_out) is True


def test_consume_of_several_queues_is_unsupported(broker: Any) -> None:
    with pytest.raises(UnsupportedOperation) as caught:
        broker.consume(["consume-a", "consume-b"])
    assert isinstance(caught.value, StemError)
    assert str(caught.value)


def test_envelope_visibility_timeout_shortens_the_default_lease(engine: Any) -> None:
    queue = "x9-short-lease"
    with engine.broker(default_visibility_timeout=30) as broker:
        env = envelope(queue, visibility_timeout=LEASE)
        broker.publish(env)
        before = now_utc()
        first = expect_delivery(broker, queue)
        assert first.lease_expires_at <= before + timedelta(seconds=LEASE + 1)
        second = expect_delivery(broker, queue, timeout=DELIVERY_TIMEOUT)
        assert second.envelope.id == env.id
        assert broker.ack(second) is True


def test_envelope_visibility_timeout_lengthens_the_default_lease(engine: Any) -> None:
    queue = "x9-long-lease"
    with engine.broker(default_visibility_timeout=LEASE) as broker:
        env = envelope(queue, visibility_timeout=30)
        broker.publish(env)
        before = now_utc()
        first = expect_delivery(broker, queue)
        assert first.lease_expires_at >= before + timedelta(seconds=29)
        expect_nothing(broker, queue, window=LEASE + SETTLE)
        assert broker.inflight_count(queue) == 1
        assert broker.ack(first) is True


def test_default_lease_applies_without_an_envelope_visibility_timeout(engine: Any) -> None:
    queue = "default-lease"
    with engine.broker(default_visibility_timeout=LEASE) as broker:
        env = envelope(queue)
        broker.publish(env)
        before = now_utc()
        first = expect_delivery(broker, queue)
        assert first.lease_expires_at <= before + timedelta(seconds=LEASE + 1)
        second = expect_delivery(broker, queue, timeout=DELIVERY_TIMEOUT)
        assert second.envelope.id == env.id
        assert broker.ack(first) is False
        assert broker.ack(second) is True


def test_close_is_idempotent_and_ends_its_consumers(engine: Any) -> None:
    queue = "close-idempotent"
    broker = engine.broker()
    consumer = broker.consume(queue)
    broker.close()
    broker.close()
    assert consumer.receive(timeout=SETTLE) is None

    with engine.broker() as again:
        again.close()  # closing inside the with block, then on exit, is fine


def waits_for_change(broker: Any, mark: object) -> bool:
    """Whether a change after ``mark`` is seen within DELIVERY_TIMEOUT (a wait may end
    early without one: a delayed job falls due without any change)."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while time.monotonic() < deadline:
        if broker.wait_for_change(mark, DELIVERY_TIMEOUT):
            return True
    return False


def test_wait_for_change_sees_a_publish_made_after_the_mark(broker: Any) -> None:
    """What a worker on several queues waits on: one wait covers every queue."""
    mark = broker.change_mark()
    broker.publish(envelope("change-a"))
    assert waits_for_change(broker, mark)


def test_wait_for_change_wakes_a_waiting_thread_on_a_publish_to_any_queue(broker: Any) -> None:
    mark = broker.change_mark()
    seen: list[bool] = []
    waiter = threading.Thread(target=lambda: seen.append(waits_for_change(broker, mark)))
    waiter.start()
    broker.publish(envelope("change-b"))
    waiter.join(DELIVERY_TIMEOUT + 1)
    assert seen == [True]


# -- SQLite-specific ---------------------------------------------------------------------


class TestSqliteSpecific:
    """Cases that reach under the public API into the SQLite file itself."""

    @pytest.fixture(autouse=True)
    def _sqlite_only(self, engine: Any) -> None:
        if engine.name != "sqlite":
            pytest.skip("damages the SQLite job table directly")

    def test_wait_for_change_sees_a_commit_of_another_connection(self, broker: Any) -> None:
        """Another process's commit is noticed: it cannot wake this process's threads."""
        broker.publish(envelope("change-other"))
        mark = broker.change_mark()
        with sqlite3.connect(broker.path) as conn:
            conn.execute("UPDATE stem_jobs SET updated_at = updated_at + 1")
        conn.close()
        assert waits_for_change(broker, mark)

    def test_wait_for_change_refuses_a_mark_it_did_not_make(self, broker: Any) -> None:
        with pytest.raises(StemError, match="change_mark"):
            broker.wait_for_change(object(), 0.01)

    @pytest.mark.parametrize("damage", ["invalid-json", "not-an-object", "missing-name"])
    def test_malformed_job_row_is_dead_lettered(self, broker: Any, damage: str) -> None:
        queue = f"malformed-{damage}"
        bad = envelope(queue, priority=5)  # claimed first
        good = envelope(queue)
        broker.publish(bad)
        broker.publish(good)
        text = {
            "invalid-json": "{not json",
            "not-an-object": "[1, 2]",
            "missing-name": json.dumps({"id": bad.id, "queue": queue}),
        }[damage]
        with sqlite3.connect(broker.path) as conn:
            changed = conn.execute(
                "UPDATE stem_jobs SET envelope = ? WHERE id = ?", (text, bad.id)
            ).rowcount
        conn.close()
        assert changed == 1

        with broker.consume(queue) as consumer:
            delivery = consumer.receive(timeout=DELIVERY_TIMEOUT)
            assert delivery is not None
            assert delivery.envelope.id == good.id
            assert broker.ack(delivery) is True
            assert consumer.receive(timeout=SETTLE) is None

        entry = broker.get_dead_letter(queue, bad.id)
        assert entry is not None
        assert entry.reason == "malformed-envelope"
        assert entry.envelope.id == bad.id
        assert broker.pending_count(queue) == 0
        assert broker.inflight_count(queue) == 0


# -- ack_many: the worker's batched acks ----------------------------------------------


def test_ack_many_acks_each_live_receipt_and_refuses_a_stale_one(broker: Any) -> None:
    queue = "ack-many"
    _env, stale, live = take_over(broker, queue)
    others = [envelope(queue, args=[i]) for i in range(3)]
    broker.publish_many(others)
    consumer = broker.consume(queue, prefetch=3)
    held = [consumer.receive(timeout=DELIVERY_TIMEOUT) for _ in others]
    assert all(delivery is not None for delivery in held)

    results = broker.ack_many([held[0], stale, held[1], held[2]])

    assert results == [True, False, True, True]
    assert broker.inflight_count(queue) == 1  # only the live lease of the taken-over job
    assert consumer.held == 0  # every receipt given settles its prefetch slot
    assert broker.ack_many([live]) == [True]
    assert broker.ack_many([]) == []
    assert broker.pending_count(queue) == broker.inflight_count(queue) == 0
    consumer.close()


def test_threads_receiving_at_once_never_claim_past_the_prefetch(broker: Any) -> None:
    """X-16 with several threads on one consumer (how a worker's executors claim)."""
    queue = "prefetch-threads"
    broker.publish_many([envelope(queue, args=[i], visibility_timeout=60) for i in range(50)])
    consumer = broker.consume(queue, prefetch=4)
    start = threading.Barrier(8)
    got: list[Any] = []

    def take() -> None:
        start.wait()
        delivery = consumer.receive(timeout=0.3)
        if delivery is not None:
            got.append(delivery)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert len(got) == 4
    assert consumer.held == 4
    assert broker.inflight_count(queue) == 4
    consumer.close()


def test_publish_copies_stores_that_many_copies_each_with_its_own_id(broker: Any) -> None:
    queue = "copies"
    template = envelope(queue, args=[1, {"k": "é"}], priority=3)
    ids = broker.publish_copies(template, 5)

    assert len(ids) == len(set(ids)) == 5 and template.id not in ids
    assert broker.pending_count(queue) == 5
    consumer = broker.consume(queue, prefetch=5)
    got = [consumer.receive(timeout=DELIVERY_TIMEOUT) for _ in ids]
    assert sorted(d.envelope.id for d in got if d) == sorted(ids)
    for delivery in got:
        assert delivery is not None
        # The same envelope as stored (times in milliseconds), but for its id.
        assert replace(delivery.envelope, id=template.id).to_json() == template.to_json()
        broker.ack(delivery)
    assert broker.publish_copies(template, 0) == []
    with pytest.raises(InvalidPayload):
        broker.publish_copies(envelope(queue, args=[object()]), 2)
    assert broker.pending_count(queue) == 0
    consumer.close()
