"""The main loop of a process-pool child.

A child runs one task at a time in its main thread and never opens a database: it
asks its worker (over a pipe) to enqueue, renew leases and record progress, so the
worker stays the only writer of both files. Signals from the worker interrupt a
running body: SIGUSR1 for the soft time limit, SIGUSR2 for a soft shutdown.
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import sys
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from ..errors import SoftTimeLimitExceeded, StemError, TaskRevoked
from ..model import Envelope
from ..options import EnqueueOptions
from ..signature import options_to_json
from .outcome import Outcome, error_outcome
from .runner import run_body
from .wire import outcome_to_wire

_body_running = False


class _PipeChannel:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def _call(self, method: str, *args: Any) -> Any:
        self._conn.send(("call", method, args))
        kind, value = self._conn.recv()
        if kind == "error":
            raise StemError(value)
        return value

    def enqueue(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions
    ) -> str:
        fields = {k: v for k, v in vars(options).items() if v is not None and k != "extras"}
        return str(self._call("enqueue", name, list(args), kwargs, options_to_json(fields)))

    def heartbeat(self) -> bool:
        return bool(self._call("heartbeat"))

    def extend_lease(self, by: float) -> bool:
        return bool(self._call("extend_lease", by))

    def progress(self, percent: float, data: Any) -> None:
        self._call("progress", percent, data)

    def is_revoked(self) -> bool:
        return bool(self._call("is_revoked"))


class _Guard:
    """Marks the body as running (so signals may interrupt it) and tells the worker,
    which starts the time-limit clocks only then."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def enter(self) -> None:
        global _body_running
        self._conn.send(("started",))
        _body_running = True

    def leave(self) -> None:
        global _body_running
        _body_running = False


def _raise_in_body(exc_type: type[BaseException]) -> Any:
    def handler(signum: int, frame: FrameType | None) -> None:
        if _body_running:
            raise exc_type()

    return handler


_modules: dict[str, Any] = {}


def _resolve(module: str, qualname: str, main_file: str | None) -> Any:
    loaded = _modules.get(module)
    if loaded is None:
        if module in ("__main__", "__mp_main__") and "__mp_main__" in sys.modules:
            loaded = sys.modules["__mp_main__"]  # multiprocessing already ran the script
        elif module in ("__main__", "__mp_main__") and main_file:
            spec = importlib.util.spec_from_file_location("__stem_main__", main_file)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {main_file}")
            loaded = importlib.util.module_from_spec(spec)
            sys.modules["__stem_main__"] = loaded
            spec.loader.exec_module(loaded)
        else:
            loaded = importlib.import_module(module)
        _modules[module] = loaded
    target: Any = loaded
    for part in qualname.split("."):
        target = getattr(target, part)
    return getattr(target, "fn", target)


def child_main(conn: Connection, sys_path: list[str]) -> None:
    """Serve ``("run", ...)`` requests until the pipe closes or ``None`` arrives."""
    sys.path[:] = sys_path
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    signal.signal(signal.SIGUSR1, _raise_in_body(SoftTimeLimitExceeded))
    signal.signal(signal.SIGUSR2, _raise_in_body(TaskRevoked))
    channel = _PipeChannel(conn)
    guard = _Guard(conn)
    conn.send(("ready",))  # the handlers are in place: signals are safe from now on
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if request is None:
            return
        _, module, qualname, main_file, bind, envelope_data = request
        outcome: Outcome
        try:
            fn = _resolve(module, qualname, main_file)
            envelope = Envelope.from_dict(envelope_data)
        except BaseException as exc:  # noqa: BLE001 - reported to the worker as the outcome
            outcome = error_outcome(exc, retryable=False)
        else:
            outcome = run_body(fn, bind, envelope, channel, guard)
        try:
            conn.send(("done", outcome_to_wire(outcome)))
        except (BrokenPipeError, OSError):
            return


__all__ = ["child_main"]
