"""Retrying engine calls that met a busy database, while the lease still holds.

``DatabaseBusy`` means another process kept the write lock past the busy timeout and the
call changed nothing, so it is safe to try again. Giving up at once would release a
finished job (it would run again) or let its lease lapse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import DatabaseBusy

log = logging.getLogger("stem_sqlite.worker")


class Patient:
    """A view of a broker or backend whose calls retry ``DatabaseBusy`` for ``patience``
    seconds (backing off from 50 ms to 1 s) before giving up."""

    def __init__(self, target: Any, patience: float = 60.0) -> None:
        self._target = target
        self._patience = patience

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute
        return self._patiently(name, attribute)

    def _patiently(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def patient_call(*args: Any, **kwargs: Any) -> Any:
            deadline = time.monotonic() + self._patience
            delay = 0.05
            while True:
                try:
                    return call(*args, **kwargs)
                except DatabaseBusy as exc:
                    if time.monotonic() + delay > deadline:
                        raise
                    log.warning("%s met a busy database (%s); retrying in %.2fs", name, exc, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)

        return patient_call
