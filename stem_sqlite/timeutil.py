"""Durations, timestamps and the injectable clock.

Every duration accepted by the public API is a number of seconds or a
``timedelta``; every timestamp is a timezone-aware ``datetime``. Inside SQLite
every time is an integer number of milliseconds since the epoch (UTC), so that
comparisons are numeric and never depend on text formatting.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from .errors import InvalidArgument

Duration = float | int | timedelta

#: The longest duration accepted anywhere (100 years): beyond it dates overflow.
MAX_SECONDS = 100 * 365.25 * 24 * 3600


class Clock(Protocol):
    """Where "now" comes from. Tests inject a manual clock; production uses the system's."""

    def now(self) -> float:
        """Seconds since the epoch, UTC."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to; for tests of expiry and delays."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, by: Duration) -> None:
        """Move the clock forward by ``by`` (seconds or timedelta)."""
        self._now += to_seconds(by, name="by")


SYSTEM_CLOCK: Clock = SystemClock()


def to_seconds(value: Duration, *, name: str, allow_zero: bool = True) -> float:
    """Convert a duration (seconds or timedelta) to float seconds, refusing nonsense.

    Raises ``InvalidArgument`` (a ``ValueError``) naming the parameter for a negative,
    NaN or infinite value, and for a type that is not a duration.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidArgument(
            f"{name} must be a number of seconds or a timedelta, got {value!r} "
            f"({type(value).__name__})"
        )
    if math.isnan(seconds) or math.isinf(seconds):
        raise InvalidArgument(f"{name} must be a finite duration, got {value!r}")
    if seconds > MAX_SECONDS:
        raise InvalidArgument(
            f"{name} must be at most {MAX_SECONDS:.0f} seconds (100 years), got {value!r}"
        )
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise InvalidArgument(f"{name} must be {bound} seconds, got {value!r}")
    return seconds


def optional_seconds(value: Duration | None, *, name: str) -> float | None:
    """Like :func:`to_seconds`, passing ``None`` through."""
    return None if value is None else to_seconds(value, name=name)


def require_aware(value: datetime, *, name: str) -> datetime:
    """Return ``value`` in UTC; refuse a naive datetime instead of guessing its zone."""
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidArgument(
            f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)), "
            f"got the naive datetime {value.isoformat()}"
        )
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise InvalidArgument(
            f"{name} is out of the supported range: {value.isoformat()}"
        ) from None
    if not 1970 <= utc.year <= 9998:
        raise InvalidArgument(f"{name} must be between 1970 and 9998 (UTC), got {utc.isoformat()}")
    return utc


def to_ms(seconds: float) -> int:
    """Epoch seconds to the integer milliseconds stored in SQLite."""
    return round(seconds * 1000)


def from_ms(ms: int) -> datetime:
    """Integer milliseconds to an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(value: datetime) -> int:
    return to_ms(value.timestamp())


def iso(value: datetime) -> str:
    """The canonical text form of a timestamp: UTC, millisecond precision, ``Z`` suffix."""
    # isoformat ends in "+00:00" for a UTC time; the stored form says "Z".
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 timestamp that carries an offset or ``Z``; naive text is refused."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise InvalidArgument(f"{text!r} is not an ISO-8601 timestamp") from exc
    return require_aware(value, name="timestamp")


def utcnow(clock: Clock = SYSTEM_CLOCK) -> datetime:
    return datetime.fromtimestamp(clock.now(), tz=UTC)
