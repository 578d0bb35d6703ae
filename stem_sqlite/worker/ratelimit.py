"""Per-worker rate limits ("30/m"): at most N starts per period, spaced evenly."""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """Celery's behaviour: a bucket of one token refilled at N per period, so runs of
    a limited task start at least ``period / N`` seconds apart on this worker."""

    def __init__(self) -> None:
        self._next_free: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait_time(self, key: str, rate: tuple[float, float]) -> float:
        """Take a slot now and return 0, or return how long until the next free slot."""
        tokens, period = rate
        spacing = period / tokens
        now = time.monotonic()
        with self._lock:
            free_at = self._next_free.get(key, now)
            if free_at > now:
                return free_at - now
            self._next_free[key] = now + spacing
            return 0.0
