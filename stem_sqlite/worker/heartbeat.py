"""The worker's heartbeat: what it stores about itself for monitoring."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

from ..model import WorkerHeartbeat
from ..timeutil import utcnow

if TYPE_CHECKING:
    from ..app import Stem
    from .execution import Execution
    from .leases import HeldLease

log = logging.getLogger("stem_sqlite.worker")


class Heartbeats:
    """The heartbeat of :class:`Worker`: its queues, running tasks and counters."""

    app: Stem
    name: str
    queues: list[str]
    concurrency: int
    pool: str
    prefetch: int
    counts: dict[str, int]
    _active: set[Execution]
    _active_lock: threading.Lock
    _stopping: threading.Event
    _stopped: threading.Event
    _last_lease: HeldLease | None

    def _beat(self, backend: Any) -> None:
        with self._active_lock:
            active = list(self._active)
        per_queue = {q: 0 for q in self.queues}
        for execution in active:
            per_queue[execution.delivery.queue] = per_queue.get(execution.delivery.queue, 0) + 1
        try:
            backend.set_worker_heartbeat(
                WorkerHeartbeat(
                    worker_id=self.name,
                    timestamp=utcnow(self.app.clock),
                    inflight=len(active),
                    queues=[{"name": q, "inflight": n} for q, n in per_queue.items()],
                    concurrency=self.concurrency,
                    last_lease_renewal=self._last_lease.last_renewal if self._last_lease else None,
                    extras={
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "pool": self.pool,
                        "prefetch": self.prefetch,
                        **self.counts,
                        "stopping": self._stopping.is_set(),
                        "stopped": self._stopped.is_set(),
                    },
                )
            )
        except Exception:
            log.exception("could not store the worker heartbeat")
