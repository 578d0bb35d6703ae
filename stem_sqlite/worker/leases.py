"""Keeping a delivery's lease alive from the moment the worker receives it until it
is settled: renewed every third of its length, by its full length."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import StemError
from ..model import Delivery
from ..timeutil import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from .scheduler import Scheduler, Timer

log = logging.getLogger("stem_sqlite.worker")


def lease_epoch(delivery: Delivery) -> int:
    """When the lease began, in epoch milliseconds: later leases of a job have larger
    epochs, so a status record is never taken over by an older lease."""
    claimed = delivery.lease_expires_at.timestamp() - delivery.lease_duration
    return round(claimed * 1000)


class HeldLease:
    """The worker's hold on one delivery. ``lost`` turns True when a renewal is refused
    (another consumer took the job over); outcomes of a lost lease are never stored."""

    def __init__(self, delivery: Delivery, broker: Any, scheduler: Scheduler) -> None:
        self.delivery = delivery
        self._broker = broker
        self._clock: Clock = getattr(broker, "clock", SYSTEM_CLOCK)
        self._scheduler = scheduler
        remaining = (delivery.lease_expires_at - datetime.now(UTC)).total_seconds()
        self.duration = delivery.lease_duration or max(0.05, remaining)
        self.lost = False
        #: When the lease ends as far as this worker knows (epoch seconds): no other
        #: consumer can claim the job before then.
        self.ends_at = delivery.lease_expires_at.timestamp()
        self.last_renewal: datetime | None = None
        self._stopped = False
        self._timer: Timer | None = None
        self._lock = threading.Lock()

    def start(self) -> HeldLease:
        self._schedule()
        return self

    def _schedule(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if not self._stopped and not self.lost:
                self._timer = self._scheduler.call_later(self.duration / 3, self._tick)

    def _tick(self) -> None:
        try:
            held = self.renew(self.duration)
        except StemError as exc:
            # The database was busy or failing: the lease still holds until it ends, so
            # try again soon instead of giving up on it.
            log.warning("renewing the lease of job %s failed (%s); retrying", self.delivery.id, exc)
            with self._lock:
                if not self._stopped:
                    self._timer = self._scheduler.call_later(
                        min(1.0, self.duration / 10), self._tick
                    )
            return
        if held:
            self._schedule()

    def renew(self, by: float) -> bool:
        """Make the lease end ``by`` seconds from now; False once the lease is lost."""
        if self.lost:
            return False
        if self._stopped:
            return True
        asked_at = self._clock.now()
        if self._broker.extend_lease(self.delivery, by):
            self.last_renewal = datetime.now(UTC)
            self.ends_at = max(self.ends_at, asked_at + by)
            return True
        self.lost = True
        envelope = self.delivery.envelope
        log.warning(
            "task %s[%s] lost its lease; its outcome will not be stored", envelope.name, envelope.id
        )
        return False

    def holds(self, margin: float) -> bool:
        """Whether the lease is ours for at least ``margin`` more seconds by the wall
        clock: False after a pause (e.g. SIGSTOP) that outlived it, when another worker
        may already run the job."""
        return not self.lost and self._clock.now() + margin < self.ends_at

    def extend(self, by: float) -> bool:
        """A task asked for a longer lease: later renewals keep at least ``by``."""
        self.duration = max(self.duration, by)
        ok = self.renew(by)
        self._schedule()
        return ok

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._timer is not None:
                self._timer.cancel()
