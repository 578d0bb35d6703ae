"""Retry decisions and delays (the original's formulas, with an injectable random source)."""

from __future__ import annotations

import random
from typing import Protocol

from .options import RetryPolicy

DEFAULT_BASE_SECONDS = 2.0
DEFAULT_MAX_SECONDS = 300.0


class RandomSource(Protocol):
    def randint(self, a: int, b: int) -> int: ...


def retry_delay(attempt: int, policy: RetryPolicy | None, rng: RandomSource | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` is 0-based).

    Without a policy: exponential from 2 s, capped at 5 min, minus up to a quarter of
    jitter. With a policy: ``default_delay``, doubled per attempt when ``backoff``,
    capped at ``backoff_max``, minus up to a quarter when ``jitter``.
    """
    source = rng or random
    if policy is None:
        capped = min(DEFAULT_BASE_SECONDS * 1000 * 2.0**attempt, DEFAULT_MAX_SECONDS * 1000)
        jitter = int(source.randint(0, int(capped) // 4))
        return max(0.0, min(capped - jitter, DEFAULT_MAX_SECONDS * 1000)) / 1000
    base = policy.default_delay * 1000
    if not policy.backoff:
        return base / 1000
    raw = 0.0 if base == 0 else base * 2.0**attempt
    cap = policy.backoff_max * 1000 if policy.backoff_max is not None else raw
    capped = cap if raw == 0 else max(0.0, min(raw, cap))
    if policy.jitter and capped > 0:
        jitter = int(source.randint(0, int(capped) // 4))
        return max(0.0, min(capped - jitter, cap)) / 1000
    return capped / 1000


def may_retry(exc: BaseException, policy: RetryPolicy | None) -> bool:
    """Whether the policy's filters allow retrying after ``exc`` (by exception class name,
    including its base classes)."""
    if policy is None:
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & set(policy.dont_auto_retry_for):
        return False
    if not policy.auto_retry_for:
        return True
    return bool(names & set(policy.auto_retry_for))
