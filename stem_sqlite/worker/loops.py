"""The worker's background threads: claiming deliveries and handing them to executors."""

from __future__ import annotations

import logging
import queue as queue_module
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..model import Delivery
from .leases import HeldLease

if TYPE_CHECKING:
    from ..app import Stem
    from .batch import SettleBatch
    from .pipeline import Pipeline
    from .scheduler import Scheduler

log = logging.getLogger("stem_sqlite.worker")

_STOP = object()


class WorkLoops:
    """The fetch and execute loops of :class:`Worker`, run in its background threads.

    Either every executor claims its own jobs (:meth:`_claim_and_execute`), or
    fetchers hold deliveries (leases renewed) and put them on the work queue for
    the executors (:meth:`_execute`).
    """

    app: Stem
    prefetch: int
    scheduler: Scheduler | None
    batch: SettleBatch
    _pipeline: Pipeline
    _work: queue_module.Queue[Any]
    _consumers: list[Any]
    _stopping: threading.Event
    _settled: threading.Event
    _last_lease: HeldLease | None

    def _received(self, consumer: Any) -> Iterator[Delivery]:
        """Deliveries of ``consumer`` until the worker stops. A failed claim is tried
        again a second later; a delivery that arrives after the stop goes back."""
        while not self._stopping.is_set():
            try:
                delivery = consumer.receive(timeout=0.5)
            except Exception:
                if self._stopping.is_set():
                    return
                log.exception("claiming from queue %s failed; retrying", consumer.queue)
                self._stopping.wait(1.0)
                continue
            if delivery is None:
                continue
            if self._stopping.is_set():
                self._release(delivery)
                return
            yield delivery

    def _fetch(self, consumer: Any) -> None:
        for delivery in self._received(consumer):
            self._work.put((delivery, self._hold(delivery)))

    def _fetch_many(self) -> None:
        """One fetcher for several queues, so that ``prefetch`` bounds the deliveries
        held across all of them: each claim may take only what the budget has left.

        It checks every queue, then waits for the next commit to the broker file (all
        the queues live in it), so a job on any queue is picked up as fast as on one.
        """
        broker = self.app.broker
        while not self._stopping.is_set():
            try:
                # Taken before the claims: a commit made while they run wakes the wait.
                mark = broker.change_mark()
                got = False
                free = 0
                for consumer in self._consumers:
                    free = self.prefetch - sum(c.held for c in self._consumers)
                    if free <= 0:
                        break
                    delivery = consumer.receive(timeout=0, limit=free)
                    if delivery is not None:
                        got = True
                        self._accept(delivery)
                if got:
                    continue
                if free <= 0:
                    self._settled.wait(0.05)
                    self._settled.clear()
                    continue
                broker.wait_for_change(mark, 1.0)
            except Exception:
                if self._stopping.is_set():
                    return
                log.exception("claiming failed; retrying")
                self._stopping.wait(1.0)

    def _accept(self, delivery: Delivery) -> None:
        if self._stopping.is_set():
            self._release(delivery)
        else:
            self._work.put((delivery, self._hold(delivery)))

    def _hold(self, delivery: Delivery) -> HeldLease:
        """Start renewing the delivery's lease now: it may wait for a free slot."""
        assert self.scheduler is not None
        lease = HeldLease(delivery, self.app.broker, self.scheduler).start()
        self._last_lease = lease
        return lease

    def _execute(self) -> None:
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            delivery, lease = item
            if self._stopping.is_set():
                lease.stop()
                self._release(delivery)
                continue
            self._pipeline.handle(delivery, lease)
            if self._work.empty() or self.batch.due():
                self.batch.flush()
            self._settled.set()

    def _claim_and_execute(self, consumer: Any) -> None:
        for delivery in self._received(consumer):
            self._pipeline.handle(delivery, self._hold(delivery))
            # This executor's next claim waits for the ack of this one: store it now
            # (with whatever other executors added meanwhile).
            self.batch.flush()
            self._settled.set()

    def _release(self, delivery: Delivery) -> None:
        try:
            self.app.broker.nack(delivery, requeue=True)
        except Exception:
            log.exception("could not release job %s", delivery.id)
