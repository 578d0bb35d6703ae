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

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """Runs callbacks at monotonic times on one daemon thread; a failing callback is logged."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer, Callable[[], object]]] = []
        self._counter = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="stem-scheduler", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        timer = Timer()
        with self._wake:
            when = time.monotonic() + max(0.0, delay)
            heapq.heappush(self._heap, (when, next(self._counter), timer, callback))
            if self._heap[0][2] is timer:  # only an earlier deadline needs the thread awake
                self._wake.notify()
        return timer

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
                    inner = self.call_later(interval, tick)
                    inner.cancelled = False

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
                _, _, timer, callback = heapq.heappop(self._heap)
            if timer.cancelled:
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
