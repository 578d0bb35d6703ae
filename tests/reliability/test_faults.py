"""Faults of the environment: a full disk, a write lock held by another process, and
job rows damaged on disk. Each must end in a clear error or a dead letter, never in a
lost job, a damaged file or a worker that stops working."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from stem_sqlite import (
    DatabaseBusy,
    EnqueueOptions,
    Envelope,
    SqliteBroker,
    SqliteResultBackend,
    Stem,
    StemError,
    StorageError,
    TaskState,
)
from stem_sqlite.sqlite import connection
from stem_sqlite.sqlite.rows import decode_envelope
from tests.conftest import wait_for
from tests.reliability.fault_helpers import (
    integrity,
    job_rows,
    run_burst,
    write_lock_held,
)
from tests.runtime.conftest import new_worker

PAD = "x" * 3000  # a few KB per job: a 2 MB disk fills after a few hundred


# -- (a) a disk that fills up ----------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, mounted for this test only (skipped where mounting is not allowed)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); see the setrlimit test")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def assert_clear_full_error(error: tuple[str, str] | None, path: Path) -> None:
    assert error is not None, "the disk never filled up"
    kind, message = error
    assert kind == "StorageError", f"expected a StorageError, got {kind}: {message}"
    assert str(path) in message, f"the error does not name the file: {message}"
    lowered = message.lower()
    assert "full" in lowered or "size limit" in lowered or "too large" in lowered, (
        f"the error does not say that the disk (or the file's size limit) is full: {message}"
    )


def assert_jobs_intact(path: Path, published: list[str]) -> None:
    """The file is sound and holds every job published before the error, readable."""
    assert integrity(path) == "ok"
    rows = job_rows(path)
    assert [row[1] for row in rows] == published
    for row in rows:
        envelope = decode_envelope(row[-1])
        assert envelope.id == row[1]
        assert envelope.args[0] == int(row[1].split("-")[1])


def test_full_disk_gives_a_clear_error_and_loses_nothing(small_disk: Path, tmp_path: Path) -> None:
    path = small_disk / "broker.sqlite"
    broker = SqliteBroker.open(
        path, sweeper_interval=0, default_visibility_timeout=2, poll_interval=0.02
    )
    backend = SqliteResultBackend.open(tmp_path / "backend.sqlite", poll_interval=0.02)
    app = Stem(broker=broker, backend=backend)
    runs: list[int] = []

    @app.task(name="faults.fill")
    def fill(n: int, pad: str) -> int:
        runs.append(n)
        return n

    try:
        published: list[str] = []
        error: tuple[str, str] | None = None
        for n in range(5000):
            task_id = f"fill-{n:05d}"
            try:
                fill.apply_async((n, PAD), task_id=task_id)
            except StemError as exc:
                error = (type(exc).__name__, str(exc))
                break
            published.append(task_id)
        assert_clear_full_error(error, path)

        # The process keeps working for reads, and the file is sound.
        assert broker.pending_count("default") == len(published)
        assert_jobs_intact(path, published)
        # Another write fails the same clear way (and writes nothing).
        with pytest.raises(StorageError, match="full"):
            fill.apply_async((len(published), PAD), task_id="one-more")

        # A worker on the full disk keeps going and stops cleanly when asked.
        worker = new_worker(app, concurrency=2)
        worker.start()
        time.sleep(1.0)
        worker.shutdown("warm")
        assert worker.join(15), "the worker did not stop cleanly on the full disk"
        assert integrity(path) == "ok"
        left = {row[1] for row in job_rows(path)}
        done = {task_id for task_id in published if task_id not in left}
        for task_id in done:
            status = backend.get(task_id)
            assert status is not None and status.state is TaskState.SUCCEEDED, task_id

        # Free space: every job published before the error runs.
        grown = subprocess.run(
            ["mount", "-o", "remount,size=64m", str(small_disk)], capture_output=True, text=True
        )
        assert grown.returncode == 0, grown.stderr
        run_burst(app, concurrency=2)
        for n, task_id in enumerate(published):
            status = backend.get(task_id)
            assert status is not None and status.state is TaskState.SUCCEEDED, task_id
            assert status.payload == n
        assert set(runs) == set(range(len(published)))
        for count in (broker.pending_count, broker.inflight_count, broker.delayed_count):
            assert count("default") == 0
        assert broker.list_dead_letters("default").entries == []
    finally:
        broker.close()
        backend.close()
    assert integrity(path) == "ok"


# Fills the broker file at argv[1] under a file-size limit; prints what happened as JSON.
FSIZE_CHILD = r"""
import json, os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
from stem_sqlite import Envelope, SqliteBroker, StemError

path = sys.argv[1]
broker = SqliteBroker.open(path, sweeper_interval=0)
limit = 400_000
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
published, error = [], None
for n in range(5000):
    envelope = Envelope("faults.fill", args=[n, "x" * 3000], id=f"fill-{n:05d}")
    try:
        broker.publish(envelope)
    except StemError as exc:
        error = [type(exc).__name__, str(exc)]
        break
    except Exception as exc:
        error = ["not a StemError: " + type(exc).__name__, str(exc)]
        break
    published.append(envelope.id)
pending = broker.pending_count("default")
try:
    broker.publish(Envelope("faults.fill", id="one-more"))
    again = None
except Exception as exc:
    again = [type(exc).__name__, str(exc)]
broker.close()
print(json.dumps({"published": published, "error": error, "pending": pending, "again": again}))
"""


def test_file_size_limit_gives_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    """The same as a full disk, where no tmpfs can be mounted: ``setrlimit(RLIMIT_FSIZE)``
    in a child process (SIGXFSZ ignored, so writes fail with EFBIG)."""
    path = tmp_path / "broker.sqlite"
    done = subprocess.run(
        [sys.executable, "-c", FSIZE_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"the child did not stop cleanly: {done.stderr}"
    report = json.loads(done.stdout)
    published = report["published"]
    assert report["pending"] == len(published), "reads failed after the error"
    assert report["again"] is not None and report["again"][0] == "StorageError", report["again"]
    assert_jobs_intact(path, published)
    assert_clear_full_error(tuple(report["error"]) if report["error"] else None, path)


# -- (b) another process holds the write lock ----------


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    """Connections opened by this test wait 0.3 s (not 5 s) for a lock before giving up."""
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_SECONDS", 0.3)
    return 0.3


def test_lock_held_past_the_busy_timeout_gives_a_clear_error_then_works(
    tmp_path: Path, short_busy_timeout: float
) -> None:
    path = tmp_path / "broker.sqlite"
    with SqliteBroker.open(path, sweeper_interval=0) as broker:
        first = Envelope("faults.noop", args=[1])
        with write_lock_held(path):
            started = time.monotonic()
            with pytest.raises(DatabaseBusy) as caught:
                broker.publish(first)
            waited = time.monotonic() - started
            assert broker.pending_count("default") == 0  # reads are not blocked (WAL)
        message = str(caught.value)
        assert short_busy_timeout * 0.8 <= waited < 5, waited
        assert str(path) in message, message
        assert "locked" in message and "another process" in message, message
        assert "retry" in message and "stop the process" in message, message  # the fix
        assert isinstance(caught.value, StemError)

        # Released: the same call succeeds, and the failed one had written nothing.
        broker.publish(first)
        assert [row[1] for row in job_rows(path)] == [first.id]


def test_publish_with_retry_waits_out_a_lock_held_a_little_longer(
    tmp_path: Path, short_busy_timeout: float
) -> None:
    """``retry=True`` turns DatabaseBusy into retries: a lock held for longer than one
    busy timeout (but less than all the retries) costs time, not an error."""
    path = tmp_path / "broker.sqlite"
    with SqliteBroker.open(path, sweeper_interval=0) as broker:
        app = Stem(broker=broker)
        with write_lock_held(path) as holder:
            timer = threading.Timer(0.8, holder.release)
            timer.start()
            try:
                result = app.enqueue("stem.echo", [1], options=EnqueueOptions(retry=True))
            finally:
                timer.join()
        assert time.monotonic() - holder.held_since >= 0.8
        assert [row[1] for row in job_rows(path)] == [result.id]


def test_worker_keeps_going_through_a_held_lock_and_runs_each_job_once(
    tmp_path: Path, short_busy_timeout: float
) -> None:
    """Another process locks the broker for 1.5 s (five busy timeouts) while the worker
    runs a task that needs lease renewals and another task ends (its ack meets the
    lock). The lock is shorter than a lease (3 s, renewed every second), so no lease has
    to lapse: after the release the worker completes every job, and runs none twice."""
    broker_path = tmp_path / "broker.sqlite"
    broker = SqliteBroker.open(
        broker_path, default_visibility_timeout=3.0, poll_interval=0.02, sweeper_interval=0
    )
    backend = SqliteResultBackend.open(tmp_path / "backend.sqlite", poll_interval=0.02)
    app = Stem(broker=broker, backend=backend)
    runs: Counter[str] = Counter()
    gate = threading.Event()
    lock = threading.Lock()

    def note(label: str) -> None:
        with lock:
            runs[label] += 1

    @app.task(name="faults.gated")
    def gated() -> str:
        note("gated")
        assert gate.wait(20)
        return "gated"

    @app.task(name="faults.slow")
    def slow() -> str:
        note("slow")
        time.sleep(4.5)  # longer than a lease: it needs its renewals
        return "slow"

    @app.task(name="faults.record")
    def record(label: str) -> str:
        note(label)
        return label

    results = [gated.delay(), slow.delay()]
    results += [record.apply_async((f"later-{i}",), countdown=0.6) for i in range(3)]
    worker = new_worker(app, concurrency=3, name="locked-out")
    worker.start()
    try:
        wait_for(lambda: runs["gated"] and runs["slow"], timeout=10)
        with write_lock_held(broker_path) as holder:
            gate.set()  # `gated` ends now: its ack meets the lock
            time.sleep(1.5)  # the delayed jobs come due, renewals of `slow` meet the lock
            holder.release()
        for result in results:
            status = result.wait(timeout=20)
            assert status.state is TaskState.SUCCEEDED, (result.id, status)
        wait_for(
            lambda: (
                (
                    broker.pending_count("default")
                    + broker.inflight_count("default")
                    + broker.delayed_count("default")
                )
                == 0
            ),
            timeout=15,
            message="jobs were left in the queue after the lock was released",
        )
    finally:
        gate.set()
        worker.shutdown("warm")
        worker.join(15)
        broker.close()
        backend.close()
    assert dict(runs) == {"gated": 1, "slow": 1, "later-0": 1, "later-1": 1, "later-2": 1}, (
        "a job ran more than once because the broker was locked for a while"
    )
    assert integrity(broker_path) == "ok"


# -- (c) job rows damaged on disk ----------

DAMAGE = {
    "not-json": '{"id": "x", "name": ',
    "not-an-object": "[1, 2, 3]",
    "a-number": "42",
    "no-name": '{"id": "x", "queue": "default", "args": []}',
    "name-not-text": '{"id": "x", "name": 7}',
    "bad-priority": '{"id": "x", "name": "faults.record", "priority": "high"}',
    "bad-not-before": '{"id": "x", "name": "faults.record", "not_before": "soon"}',
}


def test_damaged_job_rows_are_dead_lettered_with_a_reason_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    broker_path = tmp_path / "broker.sqlite"
    broker = SqliteBroker.open(broker_path, poll_interval=0.02, sweeper_interval=0)
    backend = SqliteResultBackend.open(tmp_path / "backend.sqlite", poll_interval=0.02)
    app = Stem(broker=broker, backend=backend)
    ran: list[str] = []

    @app.task(name="faults.record")
    def record(label: str) -> str:
        ran.append(label)
        return label

    try:
        damaged = {
            kind: record.apply_async((kind,), priority=5).id for kind in DAMAGE
        }  # claimed before the healthy ones
        healthy = [record.delay(f"healthy-{i}") for i in range(3)]
        with sqlite3.connect(broker_path) as conn:
            for kind, job_id in damaged.items():
                changed = conn.execute(
                    "UPDATE stem_jobs SET envelope = ? WHERE id = ?", (DAMAGE[kind], job_id)
                ).rowcount
                assert changed == 1
        conn.close()

        run_burst(app, concurrency=2)

        assert sorted(ran) == ["healthy-0", "healthy-1", "healthy-2"]
        for result in healthy:
            assert result.get(timeout=1).startswith("healthy-")
        for kind, job_id in damaged.items():
            entry = broker.get_dead_letter("default", job_id)
            assert entry is not None, f"the {kind} row was not dead-lettered"
            assert entry.reason == "malformed-envelope", (kind, entry.reason)
            assert entry.meta.get("error"), f"no reason detail for {kind}: {entry.meta}"
            assert entry.envelope.id == job_id
            assert entry.envelope.meta.get("stem.rawEnvelope") == DAMAGE[kind]
        assert broker.dead_letter_count("default") == len(DAMAGE)
        for count in (broker.pending_count, broker.inflight_count, broker.delayed_count):
            assert count("default") == 0
    finally:
        broker.close()
        backend.close()
    assert integrity(broker_path) == "ok"
