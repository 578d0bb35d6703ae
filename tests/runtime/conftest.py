"""Fixtures of the runtime tests: an app on fresh files per test, and workers run in
this process on background threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stem_sqlite import SqliteBroker, SqliteResultBackend, Stem, Worker

POOLS = ["threads", "processes"]


class AppFactory:
    """Builds apps whose broker and backend live in the test's tmp folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.broker_path = folder / "b.sqlite"
        self.backend_path = folder / "r.sqlite"
        self._opened: list[Any] = []

    def __call__(self, *, visibility: float = 5.0, backend: bool = True) -> Stem:
        broker = SqliteBroker.open(
            self.broker_path, default_visibility_timeout=visibility, poll_interval=0.02
        )
        self._opened.append(broker)
        result_backend = None
        if backend:
            result_backend = SqliteResultBackend.open(self.backend_path, poll_interval=0.02)
            self._opened.append(result_backend)
        return Stem(broker=broker, backend=result_backend)

    def close(self) -> None:
        for engine in reversed(self._opened):
            engine.close()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[AppFactory]:
    factory = AppFactory(tmp_path)
    yield factory
    factory.close()


def new_worker(app: Stem, **options: Any) -> Worker:
    options.setdefault("concurrency", 1)
    options.setdefault("heartbeat_interval", 1)
    options.setdefault("shutdown_timeout", 5)
    return Worker(app, **options)


@contextmanager
def running(app: Stem, **options: Any) -> Iterator[Worker]:
    """A started worker; shut down warm (bounded by shutdown_timeout) on exit."""
    worker = new_worker(app, **options)
    worker.start()
    try:
        yield worker
    finally:
        worker.shutdown("warm")


def run_burst(app: Stem, *, timeout: float = 20.0, **options: Any) -> float:
    """``run(burst=True)`` on a thread; fail if it does not return in time. Returns its duration."""
    worker = new_worker(app, **options)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run(burst=True, install_signal_handlers=False)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        worker.shutdown("hard")
        thread.join(5)
        pytest.fail(f"run(burst=True) did not return within {timeout}s")
    if errors:
        raise errors[0]
    return time.monotonic() - started


def stays(predicate: Callable[[], object], seconds: float, interval: float = 0.02) -> bool:
    """True if ``predicate`` holds on every check for ``seconds`` (an absence check:
    something that must *not* happen can only be watched for a while)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(interval)
    return bool(predicate())


def max_over(measure: Callable[[], int], seconds: float, interval: float = 0.02) -> int:
    """The largest value ``measure`` returns over a window of ``seconds``."""
    deadline = time.monotonic() + seconds
    most = measure()
    while time.monotonic() < deadline:
        time.sleep(interval)
        most = max(most, measure())
    return most
