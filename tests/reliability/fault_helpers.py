"""Helpers of test_faults.py and test_security.py: in-process workers, a process that
holds a database's write lock, and plain reads of the files with ``sqlite3``."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stem_sqlite import Stem
from tests.runtime.conftest import run_burst as runtime_run_burst

# Holds SQLite's write lock (BEGIN IMMEDIATE) on argv[1] until its stdin closes.
LOCK_HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
conn.close()
print("released", flush=True)
"""


class LockHolder:
    """Another process holding the write lock of one database file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "locked", f"the lock holder did not start: {line!r}"
        self.held_since = time.monotonic()

    def release(self) -> None:
        if self.proc.poll() is not None:
            return
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        assert self.proc.stdout.readline().strip() == "released"
        assert self.proc.wait(10) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def write_lock_held(path: Path) -> Iterator[LockHolder]:
    holder = LockHolder(path)
    try:
        yield holder
        holder.release()
    finally:
        holder.kill()


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of the file, read-only (a full disk takes no writes)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return ", ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def job_rows(path: Path) -> list[tuple[Any, ...]]:
    """Every row of stem_jobs, in insertion order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT * FROM stem_jobs ORDER BY rowid").fetchall()
    finally:
        conn.close()


def run_burst(app: Stem, *, timeout: float = 30.0, **options: Any) -> None:
    """The runtime suite's burst runner, with the longer deadline these faults need."""
    runtime_run_burst(app, timeout=timeout, **options)


# -- module-level task bodies (a process-pool child imports them by name) ----------


def write_marker(path: str, text: str = "ran") -> str:
    """Create ``path``: proof that this function ran. Never registered under this name."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return text


def echo_value(value: object) -> object:
    """Return the argument as received (what a pool process got through the pipe)."""
    return value
