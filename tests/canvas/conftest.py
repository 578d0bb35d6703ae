"""Fixtures of the canvas tests: an app on fresh files in the test's tmp folder, and
real ``stem-worker`` processes (the console script) serving the same two files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stem_sqlite import Stem
from tests.canvas import canvas_tasks
from tests.conftest import TOOL_ENVIRONMENT, wait_for
from tests.runtime.conftest import AppFactory

STEM_WORKER = Path(sys.executable).parent / "stem-worker"
TASKS_FILE = Path(canvas_tasks.__file__).resolve()

CLEARED = TOOL_ENVIRONMENT


@dataclass
class Canvas:
    """One test's app (the producer side) and its tasks, with the tmp folder."""

    app: Stem
    tasks: dict[str, Any]
    folder: Path

    def file(self, name: str) -> str:
        return str(self.folder / name)


@pytest.fixture
def canvas(tmp_path: Path) -> Iterator[Canvas]:
    factory = AppFactory(tmp_path)
    app = factory(visibility=30.0)
    tasks = canvas_tasks.register(app)
    yield Canvas(app, tasks, tmp_path)
    factory.close()


class WorkerProcesses:
    """Starts ``stem-worker`` processes on the test's broker and backend files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        self.env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")

    def start(
        self, count: int = 2, *, concurrency: int = 4, extra: tuple[str, ...] = ()
    ) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` workers (``extra``: more options) and wait until each is ready."""
        started = []
        for _ in range(count):
            n = len(self.procs)
            log = self.folder / f"worker{n}.log"
            with open(log, "wb") as handle:  # the child keeps its own copy
                proc = subprocess.Popen(
                    [
                        str(STEM_WORKER),
                        "--app",
                        str(TASKS_FILE),
                        "--broker",
                        str(self.folder / "b.sqlite"),
                        "--backend",
                        str(self.folder / "r.sqlite"),
                        "-c",
                        str(concurrency),
                        "-n",
                        f"canvas-worker-{n}",
                        "--poll-interval",
                        "0.02",
                        "--shutdown-timeout",
                        "5",
                        *extra,
                    ],
                    cwd=self.folder,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=handle,
                )
            self.procs.append(proc)
            self.logs.append(log)
            started.append(proc)
        for proc, log in zip(started, self.logs[-count:], strict=True):
            wait_for(
                lambda proc=proc, log=log: self._ready(proc, log),
                timeout=30,
                interval=0.05,
                message=f"worker {proc.pid} did not report ready: {self.log_text(log)}",
            )
        return started

    @staticmethod
    def log_text(log: Path) -> str:
        return log.read_text(errors="replace") if log.exists() else ""

    def _ready(self, proc: subprocess.Popen[bytes], log: Path) -> bool:
        if proc.poll() is not None:
            pytest.fail(f"worker exited {proc.returncode} at start: {self.log_text(log)}")
        return " ready: " in self.log_text(log)

    @property
    def pids(self) -> set[int]:
        return {proc.pid for proc in self.procs}

    def all_logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{self.log_text(log)}" for log in self.logs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(tmp_path)
    yield processes
    processes.stop()
