"""Raising an exception inside a running worker thread (soft limits, soft shutdown).

Python can ask another thread to raise at its next bytecode
(``PyThreadState_SetAsyncExc``). That stops pure-Python code, not a thread blocked
in a C call (a long ``time.sleep`` or socket read wakes up only when that call
returns), which is why hard limits that must really stop a task need the process pool.
"""

from __future__ import annotations

import ctypes
import threading


class BodyGuard:
    """Tracks whether a task body is running in a thread, and interrupts only then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_id: int | None = None
        self.interrupted: type[BaseException] | None = None

    def enter(self) -> None:
        with self._lock:
            self._thread_id = threading.get_ident()

    def leave(self) -> None:
        with self._lock:
            self._thread_id = None

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` in the body's thread if the body is still running."""
        with self._lock:
            if self._thread_id is None:
                return False
            done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._thread_id), ctypes.py_object(exc_type)
            )
            if done > 1:  # never expected; undo rather than hit several threads
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id), None)
                return False
            self.interrupted = exc_type
            return bool(done == 1)
