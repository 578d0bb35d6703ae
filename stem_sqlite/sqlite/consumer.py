"""A consumer of one queue of a SQLite broker."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ..model import Delivery
from ..timeutil import Duration, to_seconds

if TYPE_CHECKING:
    from .broker import SqliteBroker


class SqliteConsumer:
    """Hands out deliveries of one queue, never holding more than ``prefetch`` unsettled.

    It claims as many jobs as it may hold in one statement and keeps the ones not
    yet handed out in a buffer. A delivery stays "held" until the broker settles it
    (ack, nack, dead_letter or reschedule, even a refused one). While it waits it
    wakes at once for commits made in this process and within the broker's
    ``change_check_interval`` for commits of other processes; a delayed job is
    picked up within ``poll_interval`` of its time.
    """

    def __init__(self, broker: SqliteBroker, queue: str, prefetch: int, name: str) -> None:
        self.broker = broker
        self.queue = queue
        self.prefetch = prefetch
        self.name = name
        self._buffer: deque[Delivery] = deque()
        self._held: set[str] = set()
        self._state = threading.Condition()
        self._closed = False
        self._expect_empty = True
        self._claiming = 0  # slots reserved by claims in progress
        self._watchers = 0  # threads waiting for the file to change
        self._last_claimed = time.monotonic()
        # Lease tokens: unique per claim, unguessable across consumers, cheap to make.
        self._token_prefix = secrets.token_hex(6)
        self._claims = itertools.count()

    @property
    def held(self) -> int:
        """Deliveries claimed and not yet settled (handed out or buffered)."""
        with self._state:
            return len(self._held) + len(self._buffer)

    def receive(
        self, timeout: Duration | None = None, *, limit: int | None = None
    ) -> Delivery | None:
        """The next delivery, waiting up to ``timeout`` seconds (forever when None).

        Returns None when the timeout passes or the consumer is closed. ``limit`` caps
        how many jobs this call may claim (a caller sharing one budget among queues).
        """
        wait = None if timeout is None else to_seconds(timeout, name="timeout")
        deadline = None if wait is None else time.monotonic() + wait
        db = self.broker.database
        while True:
            with self._state:
                if self._closed:
                    return None
                if self._buffer:
                    delivery = self._buffer.popleft()
                    self._held.add(delivery.receipt)
                    return delivery
                if self._watchers:
                    # Another thread watches the file for new jobs and claims for every
                    # free slot when it changes: wait for that instead of polling too.
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    poll = self.broker.poll_interval
                    self._state.wait(poll if left is None else min(left, poll))
                    continue
                # Slots being claimed by another thread right now count as taken:
                # threads that receive at once must not claim past the prefetch.
                room = self.prefetch - len(self._held) - self._claiming
                if limit is not None:
                    room = min(room, max(0, limit)) if room > 0 else room
                if room > 0:
                    self._claiming += room
            remaining = None if deadline is None else deadline - time.monotonic()
            if room <= 0 and limit is not None and limit <= 0:
                return None
            if room <= 0:
                # Full: wait for one of ours to be settled.
                with self._state:
                    if len(self._held) + self._claiming >= self.prefetch and not self._closed:
                        if remaining is not None and remaining <= 0:
                            return None
                        self._state.wait(
                            self.broker.poll_interval
                            if remaining is None
                            else min(remaining, self.broker.poll_interval)
                        )
                continue
            # A change mark is taken before a claim, so that a commit right after an
            # empty claim is not missed. While jobs keep coming it is not needed: an
            # empty claim without one is simply made again with one.
            claimed: list[Delivery] = []
            released = False
            try:
                mark = db.mark() if self._expect_empty else None
                claimed = self.broker._claim(self.queue, room, self)
            finally:
                released = self._end_claim(room, claimed)
            if released:
                return None
            if claimed or mark is None:
                continue
            if remaining is not None and remaining <= 0:
                return None
            assert mark is not None  # an empty claim without a mark was made again
            step = (
                self.broker.poll_interval
                if remaining is None
                else min(remaining, self.broker.poll_interval)
            )
            # Other processes' commits are looked for every change_check_interval, or
            # twice that once nothing has come for a second (an idle worker then costs
            # half as much; the first job after a quiet spell waits a few ms longer).
            check = self.broker.change_check_interval
            if time.monotonic() - self._last_claimed > 1.0:
                check = min(2 * check, self.broker.poll_interval)
            with self._state:
                self._watchers += 1
            try:
                db.wait_for_change(mark, step, check)
            finally:
                with self._state:
                    self._watchers -= 1
                    self._state.notify_all()

    def ack_and_refill(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Ack ``deliveries`` and, in the same transaction, claim jobs for the slots
        that frees (and any other free one) into this consumer's buffer, where the next
        :meth:`receive` finds them. Returns, for each delivery, whether it was acked."""
        with self._state:
            freed = sum(1 for delivery in deliveries if delivery.receipt in self._held)
            room = 0
            if not self._closed:
                taken = len(self._held) - freed + len(self._buffer) + self._claiming
                room = max(0, self.prefetch - taken)
            self._claiming += room
        claimed: list[Delivery] = []
        try:
            done, claimed = self.broker._ack_and_claim(deliveries, self, room)
        finally:
            self._end_claim(room, claimed)
        return done

    def _end_claim(self, room: int, claimed: list[Delivery]) -> bool:
        """Give back the ``room`` slots a claim reserved and buffer what it took, or,
        once the consumer is closed, release it (then True)."""
        with self._state:
            self._claiming -= room
            late = [delivery.receipt for delivery in claimed] if self._closed else []
            if not self._closed:
                self._buffer.extend(claimed)
            self._state.notify_all()  # threads waiting for this claim look again
        if room:
            self._expect_empty = not claimed
        if claimed:
            self._last_claimed = time.monotonic()
        if late:
            self.broker._release_receipts(late)
        return bool(late)

    def next_token(self) -> str:
        """A fresh lease token for one claim of this consumer."""
        return f"{self._token_prefix}{next(self._claims):x}"

    def __iter__(self) -> Iterator[Delivery]:
        while True:
            delivery = self.receive()
            if delivery is None:
                return
            yield delivery

    def _settled(self, receipt: str) -> None:
        with self._state:
            self._held.discard(receipt)
            self._state.notify_all()

    def close(self) -> None:
        """Stop consuming; jobs claimed but never handed out become visible again at once.

        Deliveries already handed out stay leased by their holder, who settles them.
        """
        with self._state:
            if self._closed:
                return
            self._closed = True
            unsent = [delivery.receipt for delivery in self._buffer]
            self._buffer.clear()
            self._state.notify_all()
        if unsent and not self.broker.database.closed:
            self.broker._release_receipts(unsent)
        self.broker._forget_consumer(self)
        self.broker.database.notify_change()  # wake a receive() blocked on the file

    def __enter__(self) -> SqliteConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
