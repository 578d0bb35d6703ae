"""Shared test helpers: polling with a deadline instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

#: Variables of the environment that would change where the tools look: cleared for
#: every tool a test starts.
TOOL_ENVIRONMENT = (
    "STEM_SQLITE_BROKER_PATH",
    "STEM_SQLITE_BACKEND_PATH",
    "STEM_SQLITE_PATH",
    "STEM_APP",
    "STEM_PATH",
    "WORKER_NAME",
)


def wait_for(
    predicate: Callable[[], T], *, timeout: float = 5.0, interval: float = 0.01, message: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(message or f"condition not met within {timeout}s")
        time.sleep(interval)
