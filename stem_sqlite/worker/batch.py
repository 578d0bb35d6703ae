"""Group commit of a worker's status writes and acks.

Most tasks end the plain way: a success with nothing to do after the ack (no group,
no link, no chain). Storing each of them costs a backend transaction for ``running``,
one for the result and a broker transaction for the ack. Here they wait a few
milliseconds in a :class:`SettleBatch` instead, and one flush stores every waiting
status in one backend transaction, then acks every job whose result is stored in one
broker transaction (which, with one queue, also claims the jobs for the freed slots).
The order of the guarantees is the same as one at a time: a job is acked only after its
result is committed, and every write stays fenced by its lease.

A ``running`` status that is still waiting when its task's result arrives is not
written at all (the result replaces it), so a task shorter than a flush shows only
its final state; a longer one shows ``running`` within ``max_delay``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..model import StatusWrite
from .execution import Execution
from .patience import Patient

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("stem_sqlite.worker")


@dataclass(eq=False)
class PendingWrite:
    """A status write waiting for the next flush; ``done`` is called once it is settled
    with whether it was stored (and, for a final status, acked)."""

    execution: Execution
    write: StatusWrite
    final: bool
    done: Callable[[bool], None] | None
    since: float


class SettleBatch:
    """The statuses and acks of one worker that wait to be stored together.

    Any thread may flush; flushes run one at a time and in the order items were
    added. The worker's ``stem-settle`` thread flushes what has waited ``max_delay``.
    """

    def __init__(self, worker: Worker, max_items: int = 512, max_delay: float = 0.01) -> None:
        self._worker = worker
        self.max_items = max_items
        self.max_delay = max_delay
        self._pending: list[PendingWrite] = []
        self._lock = threading.Condition()
        self._flushing = threading.Lock()
        self._closed = False
        self._idle = True
        #: The worker's only consumer, when it can ack and claim its next jobs in one
        #: transaction (``ack_and_refill``): the acks of a flush then also refill it.
        self.refill: Any = None
        self._thread: threading.Thread | None = None

    # -- adding ----------

    def add(self, item: PendingWrite) -> None:
        with self._lock:
            self._pending.append(item)
            if self._idle:
                self._idle = False
                self._lock.notify()  # the settle thread starts watching again

    def running(self, execution: Execution, write: StatusWrite) -> None:
        """Store ``running`` for an execution with the next flush."""
        self.add(PendingWrite(execution, write, False, None, time.monotonic()))

    def final(self, execution: Execution, write: StatusWrite, done: Callable[[bool], None]) -> None:
        """Store a final status with the next flush, then ack the execution's job."""
        self.add(PendingWrite(execution, write, True, done, time.monotonic()))

    def due(self) -> bool:
        """Whether a flush should not wait any longer."""
        with self._lock:
            if not self._pending:
                return False
            return (
                len(self._pending) >= self.max_items
                or time.monotonic() - self._pending[0].since >= self.max_delay
            )

    # -- flushing ----------

    def flush(self) -> None:
        """Store everything added so far: statuses in one backend transaction, then the
        acks of the stored results in one broker transaction."""
        with self._flushing:
            with self._lock:
                items, self._pending = self._pending, []
            if items:
                self._store(items)

    def _store(self, items: list[PendingWrite]) -> None:
        app = self._worker.app
        writes = _coalesced(items)
        try:
            stored = Patient(app.backend).set_many([item.write for item in writes])
        except Exception:
            log.exception("could not store %d task statuses; releasing their jobs", len(writes))
            self._release([item for item in writes if item.final])
            return
        finals: list[tuple[PendingWrite, bool]] = []
        for item, ok in zip(writes, stored, strict=True):
            if item.final:
                finals.append((item, ok))
            elif not ok:
                # A newer lease of this job already wrote its status: this run is stale.
                # Its result will be refused the same way, and its ack by the broker.
                log.warning(
                    "task %s[%s]: a newer run owns its status; this run's outcome will be "
                    "discarded",
                    item.execution.envelope.name,
                    item.execution.envelope.id,
                )
        if not finals:
            return
        deliveries = [item.execution.delivery for item, _ in finals]
        try:
            if self.refill is not None:
                acked = Patient(self.refill).ack_and_refill(deliveries)
            else:
                acked = Patient(app.broker).ack_many(deliveries)
        except Exception:
            log.exception("could not ack %d jobs; they return when their leases end", len(finals))
            acked = [False] * len(finals)
        for (item, ok), ack_ok in zip(finals, acked, strict=True):
            item.execution.lease.stop()
            if item.done is not None:
                item.done(ok and ack_ok)

    def _release(self, items: list[PendingWrite]) -> None:
        broker = Patient(self._worker.app.broker)
        for item in items:
            item.execution.lease.stop()
            try:
                broker.nack(item.execution.delivery, requeue=True)
            except Exception:
                log.exception(
                    "could not release job %s; it returns when its lease ends",
                    item.execution.envelope.id,
                )

    # -- the settle thread ----------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stem-settle", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # While tasks flow, look every max_delay (without a wake-up per task); after a
        # second with nothing waiting, sleep until the next item arrives.
        quiet_since = time.monotonic()
        while True:
            with self._lock:
                if self._closed:
                    return
                if self._pending:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > 1.0:
                    self._idle = True
                    while self._idle and not self._closed:
                        self._lock.wait()
                    quiet_since = time.monotonic()
                    continue
                self._lock.wait(self.max_delay)
                if not self.due() or self._closed:
                    continue
            try:
                self.flush()
            except Exception:
                log.exception("flushing task statuses failed")

    def close(self) -> None:
        """Flush what is left and stop the settle thread."""
        with self._lock:
            self._closed = True
            self._idle = False
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()


def _coalesced(items: list[PendingWrite]) -> list[PendingWrite]:
    """The writes to make: a running status whose result is in the same flush would be
    replaced at once, so it is left out (the result is written as a take-over fenced by
    the same lease epoch, just as the running status would have been)."""
    ended = {id(item.execution) for item in items if item.final}
    return [item for item in items if item.final or id(item.execution) not in ended]


__all__ = ["PendingWrite", "SettleBatch"]
