"""The engines the contract suites run against.

Each suite is written once against the Broker / ResultBackend protocols. An engine
is a pair of factories; a PostgreSQL or Redis engine adds itself to ENGINES.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stem_sqlite import SqliteBroker, SqliteResultBackend

# Short timings so the suites run in seconds (the original's SQLite run uses the same scale).
BROKER_SETTINGS: dict[str, Any] = {
    "default_visibility_timeout": 0.3,
    "poll_interval": 0.025,
    "sweeper_interval": 0.075,
}
BACKEND_SETTINGS: dict[str, Any] = {
    "default_ttl": 1,
    "group_default_ttl": 1,
    "heartbeat_ttl": 1,
    "cleanup_interval": 0.2,
    "poll_interval": 0.02,
}


class SqliteEngine:
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def broker(self, **overrides: Any) -> SqliteBroker:
        settings = {**BROKER_SETTINGS, **overrides}
        return SqliteBroker.open(self.folder / "broker.sqlite", **settings)

    def backend(self, **overrides: Any) -> SqliteResultBackend:
        settings = {**BACKEND_SETTINGS, **overrides}
        return SqliteResultBackend.open(self.folder / "backend.sqlite", **settings)


ENGINES: dict[str, Callable[[Path], Any]] = {"sqlite": SqliteEngine}


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield ENGINES[request.param](tmp_path)


@pytest.fixture
def broker(engine: Any) -> Iterator[Any]:
    with engine.broker() as opened:
        yield opened


@pytest.fixture
def backend(engine: Any) -> Iterator[Any]:
    with engine.backend() as opened:
        yield opened
