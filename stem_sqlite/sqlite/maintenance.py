"""A background thread that runs one maintenance pass every interval, and survives its errors."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("stem_sqlite.maintenance")


class Periodic:
    """Call ``action`` every ``interval`` seconds on a daemon thread until :meth:`stop`.

    A failing pass is logged and the next one still runs (unlike the original's
    fire-and-forget timers, whose errors went unhandled).
    """

    def __init__(self, name: str, interval: float, action: Callable[[], object]) -> None:
        self._interval = interval
        self._action = action
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval > 0:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._action()
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("maintenance pass failed; will try again in %.3gs", self._interval)

    def stop(self) -> None:
        """Stop the thread and wait for a pass in progress to end."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
