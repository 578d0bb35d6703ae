"""The physical limit: plain sqlite3 loops (WAL, synchronous NORMAL), one file, no framework.

Enqueue is one INSERT per transaction (or 100 per transaction); claim is one
``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING``; ack is a DELETE.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, queue TEXT NOT NULL,"
    " priority INT NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0,"
    " locked_until REAL NOT NULL DEFAULT 0, payload TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(queue, priority DESC, not_before, id)",
]
INSERT = "INSERT INTO jobs (queue, not_before, payload) VALUES ('bench', ?, ?)"
CLAIM = (
    "UPDATE jobs SET locked_until = :now + 30 WHERE id = (SELECT id FROM jobs"
    " WHERE queue = 'bench' AND not_before <= :now AND locked_until <= :now"
    " ORDER BY priority DESC, not_before, id LIMIT 1) RETURNING id, payload"
)
ACK = "DELETE FROM jobs WHERE id = ?"


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in SCHEMA:
        conn.execute(statement)
    return conn


def payload(i: int) -> str:
    return json.dumps({"task": "bench.noop", "args": [i]})


def enqueue(conn: sqlite3.Connection, n: int) -> float:
    """Seconds for n inserts, one transaction each."""
    started = time.perf_counter()
    for i in range(n):
        conn.execute(INSERT, (time.time(), payload(i)))
    return time.perf_counter() - started


def enqueue_batched(conn: sqlite3.Connection, n: int, batch: int = 100) -> float:
    started = time.perf_counter()
    for start in range(0, n, batch):
        now = time.time()
        conn.execute("BEGIN")
        conn.executemany(INSERT, [(now, payload(i)) for i in range(start, min(n, start + batch))])
        conn.execute("COMMIT")
    return time.perf_counter() - started


def claim_ack(conn: sqlite3.Connection) -> bool:
    row = conn.execute(CLAIM, {"now": time.time()}).fetchone()
    if row is None:
        return False
    json.loads(row[1])
    conn.execute(ACK, (row[0],))
    return True


def prefill(conn: sqlite3.Connection, n: int, delay: float = 0.0) -> None:
    when = time.time() + delay
    conn.execute("BEGIN")
    conn.executemany(INSERT, ((when, payload(i)) for i in range(n)))
    conn.execute("COMMIT")
