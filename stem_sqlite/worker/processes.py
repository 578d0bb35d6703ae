"""The process pool: long-lived child processes that run one task at a time each.

A task in the pool can really be stopped: when its hard time limit passes, its
process is killed and a fresh one takes its place. Children are started with
``spawn`` (never ``fork``: the worker has threads and open SQLite connections).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ..errors import TimeLimitExceeded
from ..options import EnqueueOptions
from ..signature import options_from_json
from .child import child_main
from .execution import Execution, WorkerChannel
from .outcome import Outcome, error_outcome
from .wire import outcome_from_wire

log = logging.getLogger("stem_sqlite.worker")


class WorkerLostError(Exception):
    """The pool process running the task died before it reported an outcome."""


def task_reference(fn: Callable[..., Any]) -> tuple[str, str, str | None]:
    """Where a pool process finds the function: its module, qualified name, and the
    file of ``__main__`` when the task is defined in the main script."""
    module = getattr(fn, "__module__", "") or ""
    qualname = getattr(fn, "__qualname__", "") or ""
    main_file = None
    if module in ("__main__", "__mp_main__"):
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return module, qualname, main_file


def importable(fn: Callable[..., Any]) -> bool:
    """Whether a pool process can import ``fn`` (a module-level function)."""
    qualname = getattr(fn, "__qualname__", "")
    return bool(qualname) and "<locals>" not in qualname and "<lambda>" not in qualname


class ChildProcess:
    """One pool process and the worker's end of its pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_end = context.Pipe()
        self.process = context.Process(
            target=child_main, args=(child_end, list(sys.path)), daemon=True, name="stem-pool"
        )
        self.process.start()
        child_end.close()
        self.ready = False
        self._closing = threading.Lock()
        self._closed = False

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for the child's signal handlers (a signal before them would kill it)."""
        if self.ready:
            return
        if not self.conn.poll(timeout):
            raise EOFError("the pool process did not start")
        message = self.conn.recv()
        if message != ("ready",):
            raise EOFError(f"unexpected first message from a pool process: {message!r}")
        self.ready = True

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def signal(self, signum: int) -> None:
        pid = self.process.pid
        if pid is not None and self.alive:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """Kill the process and close the pipe; safe to call twice (a hard shutdown and
        the task's own thread may both get here)."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
        if self.alive:
            self.process.kill()
        self.process.join(timeout=5)
        with contextlib.suppress(OSError):
            self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=2)
        self.kill()  # closes the pipe; kills only if it did not stop


class ProcessPool:
    """Up to ``size`` child processes, started on demand and reused."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: list[ChildProcess] = []
        self._all: set[ChildProcess] = set()
        self._lock = threading.Lock()
        self._closed = False

    def warm_up(self) -> None:
        """Start every process now, so the first tasks do not pay for start-up."""
        children = [ChildProcess() for _ in range(self.size - len(self._all))]
        with self._lock:
            self._all.update(children)
            self._idle.extend(children)

    def _acquire(self) -> ChildProcess:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.alive:
                    return child
                self._all.discard(child)
        child = ChildProcess()
        with self._lock:
            self._all.add(child)
        return child

    def _release(self, child: ChildProcess) -> None:
        with self._lock:
            if child.alive and not self._closed:
                self._idle.append(child)
                return
            self._all.discard(child)
        child.kill()

    def _discard(self, child: ChildProcess) -> None:
        with self._lock:
            self._all.discard(child)
        child.kill()

    def run(
        self,
        execution: Execution,
        channel: WorkerChannel,
        soft_limit: float | None,
        hard_limit: float | None,
    ) -> Outcome:
        """Run the execution's task in a pool process, serving its context calls, and
        enforce its time limits. Blocks the calling worker thread until it ends."""
        child = self._acquire()
        module, qualname, main_file = task_reference(execution.task.fn)
        envelope = execution.envelope
        started: float | None = None  # the limits count from the body's start
        soft_sent = revoke_sent = False
        try:
            child.wait_ready()
            child.conn.send(
                ("run", module, qualname, main_file, execution.task.bind, envelope.to_dict())
            )
            while True:
                if execution.abandoned:
                    self._discard(child)
                    return Outcome("revoked")
                if execution.revoke_requested and not revoke_sent and started is not None:
                    child.signal(signal.SIGUSR2)
                    revoke_sent = True
                elapsed = 0.0 if started is None else time.monotonic() - started
                if started is not None and hard_limit is not None and elapsed >= hard_limit:
                    self._discard(child)
                    log.warning(
                        "task %s[%s] passed its hard time limit of %.3gs; its pool process "
                        "was killed and replaced",
                        envelope.name,
                        envelope.id,
                        hard_limit,
                    )
                    return error_outcome(
                        TimeLimitExceeded(f"hard time limit ({hard_limit:g}s) exceeded")
                    )
                if (
                    started is not None
                    and soft_limit is not None
                    and not soft_sent
                    and elapsed >= soft_limit
                ):
                    child.signal(signal.SIGUSR1)
                    soft_sent = True
                wait = 0.2
                for limit, done in ((soft_limit, soft_sent), (hard_limit, False)):
                    if limit is not None and not done:
                        wait = min(wait, max(0.0, limit - elapsed))
                if not child.conn.poll(wait):
                    if not child.alive:
                        raise EOFError
                    continue
                message = child.conn.recv()
                if message[0] == "started":
                    started = time.monotonic()
                    continue
                if message[0] == "done":
                    self._release(child)
                    return outcome_from_wire(message[1])
                self._answer(child.conn, channel, message)
        except (EOFError, OSError, BrokenPipeError):
            code = child.process.exitcode
            self._discard(child)
            return error_outcome(
                WorkerLostError(f"the pool process running the task died (exit code {code})")
            )

    @staticmethod
    def _answer(conn: Connection, channel: WorkerChannel, message: Any) -> None:
        _, method, args = message
        try:
            if method == "enqueue":
                name, task_args, kwargs, options_json = args
                options = EnqueueOptions().merged(**options_from_json(options_json))
                value: Any = channel.enqueue(name, tuple(task_args), kwargs, options)
            elif method == "heartbeat":
                value = channel.heartbeat()
            elif method == "extend_lease":
                value = channel.extend_lease(float(args[0]))
            elif method == "progress":
                channel.progress(float(args[0]), args[1])
                value = None
            elif method == "is_revoked":
                value = channel.is_revoked()
            else:
                raise ValueError(f"unknown call {method!r}")
        except Exception as exc:  # noqa: BLE001 - reported to the task, which raises it
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return
        conn.send(("ok", value))

    def close(self) -> None:
        """Stop every process (idle ones gently, busy ones by kill)."""
        with self._lock:
            self._closed = True
            idle, busy = list(self._idle), self._all - set(self._idle)
            self._idle.clear()
            self._all.clear()
        for child in idle:
            child.stop()
        for child in busy:
            child.kill()
