"""Helpers of the reliability suite: real ``stem-worker`` processes on real files.

A ``Cluster`` owns one folder with the broker (``broker.sqlite``), the result backend
(``backend.sqlite``), the execution log written by ``rel_tasks.record`` and one log
file per process. Every worker runs in its own session (its own process group), so a
SIGSTOP pauses the worker together with its pool processes, and the teardown can end
whatever is left by the group id it created. The test reads the broker's job rows
with plain ``sqlite3`` (``leased_by`` names the worker holding a lease).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stem_sqlite import Envelope, SqliteBroker, SqliteResultBackend
from tests.conftest import TOOL_ENVIRONMENT, wait_for
from tests.reliability.rel_tasks import QUEUE, TASK

HERE = Path(__file__).resolve().parent
TASKS_FILE = HERE / "rel_tasks.py"
BIN = Path(sys.executable).parent
REPO = HERE.parent.parent

CLEARED = (*TOOL_ENVIRONMENT, "STEM_REL_RECORD_QUEUED")

#: Text that must never reach a user: a lock error or any traceback.
FORBIDDEN = ("database is locked", "stayed locked", "DatabaseBusy", "Traceback")


def forbidden_lines(text: str) -> list[str]:
    """Lines of ``text`` that show a lock error or a traceback."""
    return [line for line in text.splitlines() if any(word in line for word in FORBIDDEN)]


@dataclass
class WorkerProcess:
    """One ``stem-worker`` process and its log (JSON lines on stderr)."""

    name: str
    pool: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """The log lines that are JSON objects (everything the worker logged)."""
        found = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    found.append(value)
        return found

    def acked(self) -> set[str]:
        """Ids this worker reports as succeeded: stored while its lease held, then acked."""
        return {
            str(r.get("id"))
            for r in self.records()
            if r.get("event") == "succeeded" and r.get("task") == TASK
        }

    def alive(self) -> bool:
        return self.proc.poll() is None

    def dump_threads(self) -> str:
        """Ask a live worker for the stacks of its threads; its log, for a failure message."""
        if self.alive():
            before = self.log().count("most recent call first")
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGUSR1)
            deadline = time.monotonic() + 3
            while self.log().count("most recent call first") == before:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        return self.log()[-12000:]

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)


class Cluster:
    """Files, workers and readings of one reliability test."""

    def __init__(self, root: Path, visibility: float) -> None:
        self.root = root
        self.visibility = visibility
        self.logs = root / "logs"
        self.logs.mkdir()
        self.broker_path = root / "broker.sqlite"
        self.backend_path = root / "backend.sqlite"
        self.exec_log = root / "executions.log"
        self.exec_log.touch()
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update(
            STEM_SQLITE_BROKER_PATH=str(self.broker_path),
            STEM_SQLITE_BACKEND_PATH=str(self.backend_path),
            STEM_REL_EXEC_LOG=str(self.exec_log),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
            STEM_REL_DUMP="1",  # SIGUSR1 dumps a worker's threads (see rel_tasks.py)
        )
        self.env = env
        self.workers: list[WorkerProcess] = []
        self.others: list[subprocess.Popen[bytes]] = []
        self._serial = 0
        self._broker: SqliteBroker | None = None
        self._backend: SqliteResultBackend | None = None

    # -- engines of the test process ----------

    @property
    def broker(self) -> SqliteBroker:
        if self._broker is None:
            self._broker = SqliteBroker.open(self.broker_path, sweeper_interval=0)
        return self._broker

    @property
    def backend(self) -> SqliteResultBackend:
        if self._backend is None:
            self._backend = SqliteResultBackend.open(self.backend_path, cleanup_interval=0)
        return self._backend

    def close_engines(self) -> None:
        for engine in (self._broker, self._backend):
            if engine is not None:
                engine.close()
        self._broker = self._backend = None

    def publish(self, first: int, count: int) -> list[str]:
        """Publish ``count`` jobs of ``rel.record`` in one transaction; their ids."""
        envelopes = [Envelope(TASK, args=[first + i], queue=QUEUE) for i in range(count)]
        self.broker.publish_many(envelopes)
        return [e.id for e in envelopes]

    def remaining(self) -> int:
        """Jobs still in the queue: ready, delayed or leased (lapsed leases count as ready)."""
        b = self.broker
        return b.pending_count(QUEUE) + b.delayed_count(QUEUE) + b.inflight_count(QUEUE)

    # -- plain sqlite3 readings ----------

    def _query(self, path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(path, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def held_by(self, name: str) -> set[str]:
        """Ids of the jobs whose current lease was taken by the worker ``name``."""
        rows = self._query(
            self.broker_path,
            "SELECT id FROM stem_jobs WHERE leased_by = ? AND lease_token IS NOT NULL",
            (name,),
        )
        return {row[0] for row in rows}

    def job_ids(self) -> set[str]:
        return {row[0] for row in self._query(self.broker_path, "SELECT id FROM stem_jobs")}

    def job_rows(self) -> int:
        return int(self._query(self.broker_path, "SELECT count(*) FROM stem_jobs")[0][0])

    def dead_letters(self) -> list[tuple[Any, ...]]:
        return self._query(self.broker_path, "SELECT id, reason, meta FROM stem_dead_letters")

    def write_locked(self, path: Path, wait: float = 0.3) -> bool:
        """Whether some process holds the write lock of ``path`` for more than ``wait``."""
        conn = sqlite3.connect(path, timeout=wait, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return True
            raise
        finally:
            conn.close()

    def integrity(self) -> dict[str, list[str]]:
        """``PRAGMA integrity_check`` of both files (call once every process is gone)."""
        result = {}
        for path in (self.broker_path, self.backend_path):
            conn = sqlite3.connect(path)
            try:
                result[path.name] = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            finally:
                conn.close()
        return result

    def executions(self) -> dict[str, list[str]]:
        """Run markers by task id, from the execution log."""
        runs: dict[str, list[str]] = defaultdict(list)
        for line in self.exec_log.read_text().splitlines():
            if line.strip():
                task_id, marker = line.split(" ", 1)
                runs[task_id].append(marker)
        return dict(runs)

    # -- processes ----------

    def start_worker(
        self, pool: str, *, concurrency: int = 2, extra: tuple[str, ...] = ()
    ) -> WorkerProcess:
        """A ``stem-worker`` in its own process group, named by ``WORKER_NAME`` (which its
        pool processes inherit), logging JSON lines to ``logs/<name>.log``."""
        self._serial += 1
        name = f"w{self._serial:02d}-{pool[0]}"
        log_path = self.logs / f"{name}.log"
        argv = [
            str(BIN / "stem-worker"),
            "--app",
            str(TASKS_FILE),
            "-Q",
            QUEUE,
            "-c",
            str(concurrency),
            "--pool",
            pool,
            "--visibility-timeout",
            f"{self.visibility:g}",
            "--log-format",
            "json",
            *extra,
        ]
        with open(log_path, "wb") as handle:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                argv,
                cwd=self.root,
                env={**self.env, "WORKER_NAME": name},
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(name, pool, proc, log_path)
        self.workers.append(worker)
        return worker

    def wait_ready(self, worker: WorkerProcess, timeout: float = 30) -> None:
        wait_for(
            lambda: '"event": "ready"' in worker.log() or not worker.alive(),
            timeout=timeout,
            interval=0.02,
            message=f"worker {worker.name} did not report ready: {worker.log()[-3000:]}",
        )
        assert worker.alive(), f"worker {worker.name} exited at start: {worker.log()[-3000:]}"

    def start_script(
        self, code: str, *args: str, log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``python -c code args`` in the repository folder, stderr+stdout to logs/<log>."""
        with open(self.logs / log, "wb") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, *args],
                cwd=REPO,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.others.append(proc)
        return proc

    def log_of(self, name: str) -> str:
        path = self.logs / name
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self) -> dict[str, str]:
        return {path.name: path.read_text(errors="replace") for path in self.logs.iterdir()}

    def teardown(self) -> None:
        """Kill every process group this cluster started that is still there."""
        for pid in [w.pid for w in self.workers] + [p.pid for p in self.others]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGCONT)
                os.killpg(pid, signal.SIGKILL)
        for proc in [w.proc for w in self.workers] + self.others:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.close_engines()

    def wait_groups_gone(self, timeout: float = 15) -> None:
        """Wait until no process of any group this cluster started is left (orphaned pool
        processes of a killed worker end on their own once their pipe closes)."""

        def gone() -> bool:
            for pid in [w.pid for w in self.workers] + [p.pid for p in self.others]:
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    continue
                return False
            return True

        wait_for(gone, timeout=timeout, interval=0.05, message="processes of the test remain")


def summary(values: dict[str, Any], limit: int = 10) -> str:
    """A short rendering of a mapping for assertion messages."""
    items = list(values.items())
    text = ", ".join(f"{k}: {v}" for k, v in items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(visibility: float) -> Cluster:
        cluster = Cluster(tmp_path, visibility)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.teardown()


def wait_worker(
    worker: WorkerProcess,
    predicate: Any,
    *,
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.01,
) -> Any:
    """``wait_for`` on a worker's behalf; on failure the message (``what``, or what it
    returns when it is callable) is followed by the worker's log and thread stacks."""
    try:
        return wait_for(predicate, timeout=timeout, interval=interval)
    except pytest.fail.Exception:
        text = what() if callable(what) else what
        pytest.fail(f"{text} (within {timeout}s); log of {worker.name}:\n{worker.dump_threads()}")


def wait_exit(worker: WorkerProcess, timeout: float = 20, after: str = "") -> int:
    """The worker's exit code; on a timeout the failure shows its threads' stacks."""
    try:
        return worker.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"worker {worker.name} did not exit within {timeout}s{after}: {worker.dump_threads()}"
        )
