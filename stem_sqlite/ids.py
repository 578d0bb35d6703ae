"""Time-ordered unique ids for envelopes (UUID version 7 layout)."""

from __future__ import annotations

import hashlib
import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_id() -> str:
    """A new UUIDv7 string: 48 bits of Unix milliseconds, then a counter and random bits.

    Ids made by one process sort in creation order, even within one millisecond,
    which keeps index inserts at the right edge of the B-tree.
    """
    return _format(_next_prefix(), int.from_bytes(os.urandom(8), "big"))


def new_ids(count: int) -> list[str]:
    """``count`` new ids, as :func:`new_id` makes them, with one read of random bytes."""
    random_bytes = os.urandom(8 * count)
    return [
        _format(_next_prefix(), int.from_bytes(random_bytes[8 * i : 8 * i + 8], "big"))
        for i in range(count)
    ]


def _next_prefix() -> int:
    """The time and counter bits of the next id."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _counter = (_counter + 1) & 0xFFF
            if _counter == 0:  # 4096 ids in one millisecond: borrow the next one
                ms += 1
        else:
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
        _last_ms = ms
        return (ms << 80) | (0x7 << 76) | (_counter << 64)


def _format(prefix: int, random_bits: int) -> str:
    value = prefix | (0b10 << 62) | (random_bits & ((1 << 62) - 1))
    # The canonical 8-4-4-4-12 text, formatted directly (uuid.UUID costs twice as much).
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def derived_id(*parts: str) -> str:
    """A fixed id made from ``parts`` (UUID version 8 layout, from their SHA-256).

    The id of a follow-up job (a link, the next step of a chain) is derived from its
    parent's id, so a parent that runs again after a crash publishes the same job, not
    a second one.
    """
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    value = int.from_bytes(digest[:16], "big")
    value = (value & ~(0xF << 76)) | (0x8 << 76)  # version 8: custom
    value = (value & ~(0b11 << 62)) | (0b10 << 62)  # the RFC 9562 variant
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
