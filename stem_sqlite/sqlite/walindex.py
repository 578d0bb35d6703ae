"""Noticing commits of other processes without opening a read transaction.

Every commit to a database in WAL mode rewrites the wal-index header at the start of
its ``-shm`` file (a change counter, the frame count and checksums; see "WAL-mode file
format" in SQLite's documentation). Comparing those bytes is a memory read, where
``PRAGMA data_version`` opens and closes a read transaction, with several system calls
for its locks. A worker waiting for jobs looks every few milliseconds, so this is most
of what an idle worker costs.

The bytes are only a hint to look again: a change, even a torn read, makes the waiter
claim (and an empty claim is harmless), and a waiter that misses nothing here still
claims at its poll interval. Where the file cannot be mapped the pragma is used.
"""

from __future__ import annotations

import mmap
from pathlib import Path

#: One copy of the wal-index header (SQLite keeps two, one after the other).
HEADER_BYTES = 48


class WalIndexHeader:
    """A read-only view of the wal-index header of one database file."""

    def __init__(self, database_path: Path) -> None:
        self._path = Path(f"{database_path}-shm")
        self._map: mmap.mmap | None = None
        self._unavailable = False

    def snapshot(self) -> bytes | None:
        """The header's current bytes; None when the ``-shm`` file cannot be mapped."""
        if self._map is None:
            if self._unavailable:
                return None
            try:
                with open(self._path, "rb") as handle:
                    self._map = mmap.mmap(handle.fileno(), HEADER_BYTES, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                self._unavailable = True
                return None
        return self._map[:HEADER_BYTES]

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
