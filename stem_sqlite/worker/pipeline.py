"""The path of one delivery through a worker: checks, the run, and the settling."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import SoftTimeLimitExceeded, TimeLimitExceeded
from ..model import Delivery, StatusWrite, TaskState
from ..options import (
    META_EXPIRES_AT,
    META_IGNORE_RESULT,
    META_SOFT_TIME_LIMIT_MS,
    META_TIME_LIMIT_MS,
)
from ..timeutil import iso, parse_iso, utcnow
from .execution import Execution, WorkerChannel
from .leases import HeldLease, lease_epoch
from .patience import Patient
from .runner import run_body
from .settle import Settler

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("stem_sqlite.worker")


def _limit(meta: dict[str, Any], key: str, default: float | None) -> float | None:
    value = meta.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return value / 1000
    return default


class Pipeline:
    """Runs deliveries for one worker; every step is guarded so that no delivery is
    ever left neither settled nor released."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.settler = Settler(worker)

    def handle(self, delivery: Delivery, lease: HeldLease) -> None:
        """Run one delivery to the end; an unexpected error releases it for a retry.

        A plain success is left to the worker's batch, which stops its lease once the
        result is stored and the job acked.
        """
        deferred = False
        try:
            deferred = self._handle(delivery, lease)
        except Exception:
            log.exception("worker error while handling job %s; releasing it", delivery.id)
            try:
                self.worker.app.broker.nack(delivery, requeue=True)
            except Exception:
                log.exception(
                    "could not release job %s; it returns when its lease ends", delivery.id
                )
        finally:
            if not deferred:
                lease.stop()

    def _handle(self, delivery: Delivery, lease: HeldLease) -> bool:
        worker = self.worker
        app = worker.app
        envelope = delivery.envelope
        task = app.tasks.get(envelope.name)
        worker.log_event("received", envelope)
        if task is None:
            self.settler.fail_unregistered(delivery)
            worker.log_event("unregistered", envelope)
            return False
        if delivery.delivery_count > worker.max_deliveries:
            self.settler.fail_poisoned(delivery)
            worker.log_event("failed", envelope, note="delivery limit exceeded")
            return False
        expires = envelope.meta.get(META_EXPIRES_AT)
        if isinstance(expires, str):
            try:
                expired = parse_iso(expires) < utcnow(app.clock)
            except ValueError:
                expired = False
            if expired:
                self.settler.cancel_expired(delivery, expires)
                worker.log_event("cancelled", envelope, note="expired")
                return False
        if task.rate is not None:
            wait = worker.rate_limiter.wait_time(task.name, task.rate)
            if wait > 0:
                worker.defer(delivery, wait)
                return False

        now = utcnow(app.clock)
        meta = {
            **envelope.meta,
            "task": envelope.name,
            "queue": envelope.queue,
            "worker": worker.name,
            "startedAt": iso(now),
        }
        if task.ignore_result and META_IGNORE_RESULT not in meta:
            meta[META_IGNORE_RESULT] = True
        if not lease.holds(margin=min(1.0, lease.duration / 10)):
            # Taken over, or paused past its end while it waited here: another worker
            # may run it now. Settle it as ours no more (the refused nack frees its
            # prefetch slot and changes nothing in the broker).
            Patient(app.broker).nack(delivery, requeue=True)
            worker.log_event("lost", envelope, note="lease lost before the task started")
            return False
        execution = Execution(delivery, task, now, lease, meta)
        worker.track(execution)
        try:
            # Stored with the next flush, fenced by the lease epoch: if a newer lease of
            # this job already wrote its status, the write is refused, and so are this
            # run's result and ack.
            worker.batch.running(
                execution,
                StatusWrite(
                    envelope.id,
                    TaskState.RUNNING,
                    attempt=envelope.attempt,
                    meta=dict(meta),
                    owner=execution.owner,
                    epoch=lease_epoch(delivery),
                ),
            )
            outcome = self._run(execution)
        finally:
            execution.cancel_timers()
            execution.finished = True
            worker.untrack(execution)
        if execution.abandoned:
            return False  # a hard shutdown already released the job
        if outcome.kind == "success" and self.settler.succeed_later(execution, outcome.value):
            return True
        # Everything before this settle is stored first (this task's running status).
        worker.batch.flush()
        lease.stop()  # settling takes moments; a renewal racing the ack would only warn
        state = self.settler.settle(execution, outcome)
        worker.log_event(state, envelope, duration=execution.elapsed(), error=outcome.error)
        return False

    def _run(self, execution: Execution) -> Any:
        worker = self.worker
        task = execution.task
        meta = execution.envelope.meta
        soft = _limit(meta, META_SOFT_TIME_LIMIT_MS, task.soft_time_limit)
        hard = _limit(meta, META_TIME_LIMIT_MS, task.time_limit)
        channel = WorkerChannel(worker, execution)
        if (task.pool or worker.pool) == "processes":
            return worker.process_pool.run(execution, channel, soft, hard)
        guard = execution.guard
        scheduler = worker.scheduler
        assert scheduler is not None, "the worker is started before it runs tasks"
        if soft is not None:
            execution.timers.append(
                scheduler.call_later(soft, lambda: guard.interrupt(SoftTimeLimitExceeded))
            )
        if hard is not None:
            execution.timers.append(
                scheduler.call_later(hard, lambda: guard.interrupt(TimeLimitExceeded))
            )
        started = time.monotonic()
        outcome = run_body(task.fn, task.bind, execution.envelope, channel, guard)
        if guard.interrupted is TimeLimitExceeded and outcome.kind == "error":
            log.warning(
                "task %s[%s] ran past its hard time limit (%.3gs after %.3gs) in a thread; "
                "threads can only be interrupted between Python instructions",
                task.name,
                execution.envelope.id,
                hard or 0,
                time.monotonic() - started,
            )
        return outcome
