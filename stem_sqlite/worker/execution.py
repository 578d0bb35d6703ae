"""The state of one delivery while a worker runs it, and the channel its context uses."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..model import Delivery, Envelope, TaskState
from ..options import META_PROGRESS, EnqueueOptions
from .interrupts import BodyGuard
from .leases import HeldLease
from .scheduler import Timer

if TYPE_CHECKING:
    from ..app import Task
    from .worker import Worker


@dataclass(eq=False)  # identity semantics: executions live in sets
class Execution:
    """One delivery being run. ``owner`` (the receipt) fences its status writes."""

    delivery: Delivery
    task: Task
    started_at: datetime
    lease: HeldLease
    running_meta: dict[str, Any]
    started_monotonic: float = field(default_factory=time.monotonic)
    guard: BodyGuard = field(default_factory=BodyGuard)
    timers: list[Timer] = field(default_factory=list)
    abandoned: bool = False
    revoke_requested: bool = False
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def envelope(self) -> Envelope:
        return self.delivery.envelope

    @property
    def owner(self) -> str:
        return self.delivery.receipt

    @property
    def lease_lost(self) -> bool:
        return self.lease.lost

    def elapsed(self) -> float:
        return time.monotonic() - self.started_monotonic

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class WorkerChannel:
    """The context channel of a task run by this worker (directly, or for a pool process)."""

    def __init__(self, worker: Worker, execution: Execution) -> None:
        self._worker = worker
        self._execution = execution

    def enqueue(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions
    ) -> str:
        result = self._worker.app.enqueue(
            name, args, kwargs, options, strict=False, parent=self._execution.envelope
        )
        return result.id

    def heartbeat(self) -> bool:
        lease = self._execution.lease
        return lease.renew(lease.duration)

    def extend_lease(self, by: float) -> bool:
        return self._execution.lease.extend(by)

    def progress(self, percent: float, data: Any) -> None:
        execution = self._execution
        execution.running_meta[META_PROGRESS] = {"percent": percent, "data": data}
        self._worker.batch.flush()  # the running status first, then this one
        self._worker.app.backend.set(
            execution.envelope.id,
            TaskState.RUNNING,
            attempt=execution.envelope.attempt,
            meta=dict(execution.running_meta),
            owner=execution.owner,
        )

    def is_revoked(self) -> bool:
        return self._execution.revoke_requested
