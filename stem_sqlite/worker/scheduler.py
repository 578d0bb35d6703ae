"""One timer thread for the whole worker: lease renewals, time limits, heartbeats."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("stem_sqlite.worker")


class Timer:
    """A handle to cancel a scheduled call."""

    __slots__ = ("_scheduler", "callback", "cancelled")

    def __init__(self, callback: Callable[[], object] | None = None) -> None:
        self.cancelled = False
        self.callback = callback
        self._scheduler: Scheduler | None = None

    def cancel(self) -> None:
        """The callback will not be called. It (a lease, with its delivery) is let go
        at once, not when its time would have come."""
        if self.cancelled:
            return
        self.cancelled = True
        self.callback = None
        if self._scheduler is not None:
            self._scheduler._count_cancelled()


#: Below this many cancelled entries the queue is never rebuilt.
COMPACT_AFTER = 1024


class Scheduler:
    """Runs callbacks at monotonic times on one daemon thread; a failing callback is logged.

    Most timers are cancelled long before their time (a lease renewal is cancelled when
    its task ends): their entries are dropped in bulk once they are the majority, so a
    worker settling thousands of tasks a second keeps a small queue.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._cancelled = 0
        self._thread = threading.Thread(target=self._run, name="stem-scheduler", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Entries in the queue, cancelled ones not yet dropped included."""
        with self._wake:
            return len(self._heap)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(callback)
        timer._scheduler = self
        with self._wake:
            when = time.monotonic() + max(0.0, delay)
            heapq.heappush(self._heap, (when, next(self._counter), timer))
            if self._heap[0][2] is timer:  # only an earlier deadline needs the thread awake
                self._wake.notify()
        return timer

    def _count_cancelled(self) -> None:
        with self._wake:
            self._cancelled += 1
            if self._cancelled >= COMPACT_AFTER and 2 * self._cancelled > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def every(self, interval: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` every ``interval`` seconds until the returned timer is cancelled."""
        timer = Timer()

        def tick() -> None:
            if timer.cancelled:
                return
            try:
                callback()
            finally:
                if not timer.cancelled:
                    self.call_later(interval, tick)

        self.call_later(interval, tick)
        return timer

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                if self._stopped:
                    return
                _, _, timer = heapq.heappop(self._heap)
                callback = timer.callback
                if timer.cancelled:
                    self._cancelled = max(0, self._cancelled - 1)
                    continue
                timer._scheduler = None  # due: a cancel from now on changes no count
            if callback is None:
                continue
            try:
                callback()
            except Exception:
                log.exception("a scheduled worker callback failed")

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=5)
