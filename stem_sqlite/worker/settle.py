"""Settling an attempt: store its status while the lease holds, then (before the ack,
so that a crash loses none of them) tell the group, dispatch links and continue the
chain, then ack, reschedule or dead-letter the job. Engine-agnostic."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from ..canvas import META_CHAIN
from ..model import Delivery, Envelope, StatusWrite, TaskError, TaskState, TaskStatus
from ..options import (
    HEADER_GROUP_ID,
    META_LINK,
    META_RETRY_POLICY,
    META_SOFT_TIME_LIMIT_MS,
    META_TIME_LIMIT_MS,
    RetryPolicy,
)
from ..retry import retry_delay
from ..timeutil import iso, parse_iso, utcnow
from .canvas_steps import after_failure, after_success, report_to_group
from .execution import Execution
from .leases import lease_epoch
from .outcome import Outcome
from .patience import Patient

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("stem_sqlite.worker")


def resolve_policy(envelope: Envelope, task_policy: RetryPolicy | None) -> RetryPolicy | None:
    """The envelope's stored policy (set at enqueue or by a retry), else the task's."""
    stored = envelope.meta.get(META_RETRY_POLICY)
    if isinstance(stored, dict):
        try:
            return RetryPolicy.from_dict(stored)
        except Exception:  # noqa: BLE001 - a damaged policy falls back to the task's
            log.warning("task %s has an unreadable retry policy; using the task's", envelope.id)
    return task_policy


class Settler:
    """The end of every attempt, for one worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    @property
    def backend(self) -> Any:
        return Patient(self.worker.app.backend)

    @property
    def broker(self) -> Any:
        return Patient(self.worker.app.broker)

    def _meta(self, execution: Execution, **extra: Any) -> dict[str, Any]:
        return {**execution.running_meta, **extra}

    def settle(self, execution: Execution, outcome: Outcome) -> str:
        """Apply the outcome; returns the state it ended in (for the log line)."""
        if outcome.kind == "success":
            return self._succeed(execution, outcome.value)
        if outcome.kind == "revoked":
            # Interrupted by a soft shutdown: the job goes back for another worker.
            self.broker.nack(execution.delivery, requeue=True)
            return "released"
        if outcome.kind == "retry":
            return self._explicit_retry(execution, outcome)
        return self._fail_or_retry(execution, outcome)

    # -- success ----------

    def succeed_later(self, execution: Execution, value: Any) -> bool:
        """Leave a plain success (nothing to do after its ack) to the worker's batch;
        False, with nothing done, for one that must be settled now."""
        envelope = execution.envelope
        if (
            envelope.headers.get(HEADER_GROUP_ID)
            or envelope.meta.get(META_LINK)
            or envelope.meta.get(META_CHAIN)
        ):
            return False
        payload = None if execution.running_meta.get("stem.ignoreResult") else value
        write = StatusWrite(
            envelope.id,
            TaskState.SUCCEEDED,
            payload,
            None,
            envelope.attempt,
            self._meta(execution, completedAt=iso(utcnow(self.worker.app.clock))),
            owner=execution.owner,
            # A take-over fenced by the lease epoch, as the `running` write is: this run's
            # `running` may be left out of the flush (see batch.py), and then the result
            # takes the record over from a dead lease that owns it, never from a newer one.
            take_over=True,
            epoch=lease_epoch(execution.delivery),
        )
        worker = self.worker

        def done(settled: bool) -> None:
            state = "succeeded" if settled else self._lost(execution)
            worker.log_event(state, envelope, duration=execution.elapsed())

        worker.batch.final(execution, write, done)
        return True

    def _succeed(self, execution: Execution, value: Any) -> str:
        envelope = execution.envelope
        payload = None if execution.running_meta.get("stem.ignoreResult") else value
        status_meta = self._meta(execution, completedAt=iso(utcnow(self.worker.app.clock)))
        written = self.backend.set(
            envelope.id,
            TaskState.SUCCEEDED,
            payload=payload,
            attempt=envelope.attempt,
            meta=status_meta,
            owner=execution.owner,
        )
        if not written:
            return self._lost(execution)
        status = TaskStatus(
            envelope.id, TaskState.SUCCEEDED, payload, None, envelope.attempt, status_meta
        )
        if not self._follow_up(
            execution.delivery, partial(after_success, self, envelope, status, value)
        ):
            return "released"
        if not self.broker.ack(execution.delivery):
            return self._lost(execution)
        return "succeeded"

    def _follow_up(self, delivery: Delivery, follow_ups: Callable[[], None]) -> bool:
        """Run the follow-ups of an ended task before its ack. When one cannot be stored,
        the job is released, so it runs again and its re-run does them (each is done
        once, however often it is tried: see canvas_steps.py)."""
        try:
            follow_ups()
        except Exception:
            log.exception(
                "task %s[%s]: its group, links or chain could not be stored; the job is "
                "released to run again",
                delivery.envelope.name,
                delivery.envelope.id,
            )
            self.broker.nack(delivery, requeue=True)
            return False
        return True

    def _lost(self, execution: Execution) -> str:
        log.warning(
            "task %s[%s]: its lease was taken over by another worker; this run's outcome "
            "was discarded",
            execution.envelope.name,
            execution.envelope.id,
        )
        return "lost"

    # -- failure and retries ----------

    def _fail_or_retry(self, execution: Execution, outcome: Outcome) -> str:
        envelope = execution.envelope
        policy = resolve_policy(envelope, execution.task.retry_policy)
        max_retries = (
            policy.max_retries
            if policy and policy.max_retries is not None
            else (envelope.max_retries)
        )
        error = outcome.error or TaskError("Exception", "unknown error")
        filtered = not outcome.retryable or not _allowed(outcome, policy)
        if not filtered and envelope.attempt < max_retries:
            delay = retry_delay(envelope.attempt, policy, self.worker.rng)
            return self._retry(execution, delay, max_retries, error, {})
        reason = (
            "not-retryable"
            if filtered and envelope.attempt < max_retries
            else ("max-retries-exhausted")
        )
        return self._fail(execution, error, reason)

    def _explicit_retry(self, execution: Execution, outcome: Outcome) -> str:
        envelope = execution.envelope
        request = outcome.retry
        stored = request.get("retry_policy")
        policy = (
            RetryPolicy.from_dict(stored)
            if isinstance(stored, dict)
            else resolve_policy(envelope, execution.task.retry_policy)
        )
        max_retries = next(
            value
            for value in (
                request.get("max_retries"),
                policy.max_retries if policy else None,
                envelope.max_retries,
            )
            if value is not None
        )
        if envelope.attempt >= max_retries:
            cause = request.get("exc")
            error = (
                TaskError.from_dict(cause)
                if cause
                else TaskError(
                    "RetryExhausted", f"retry requested, but all {max_retries} retries are used"
                )
            )
            return self._fail(execution, error, "max-retries-exhausted", retryExhausted=True)
        now = utcnow(self.worker.app.clock)
        if request.get("eta"):
            delay = max(0.0, (parse_iso(request["eta"]) - now).total_seconds())
        elif request.get("countdown") is not None:
            delay = float(request["countdown"])
        else:
            delay = retry_delay(envelope.attempt, policy, self.worker.rng)
        overrides: dict[str, Any] = {}
        if request.get("time_limit") is not None:
            overrides[META_TIME_LIMIT_MS] = round(request["time_limit"] * 1000)
        if request.get("soft_time_limit") is not None:
            overrides[META_SOFT_TIME_LIMIT_MS] = round(request["soft_time_limit"] * 1000)
        if isinstance(stored, dict):
            overrides[META_RETRY_POLICY] = stored
        error = TaskError("RetryRequested", "the task asked to be retried", retryable=True)
        return self._retry(execution, delay, max_retries, error, overrides)

    def _retry(
        self,
        execution: Execution,
        delay: float,
        max_retries: int,
        error: TaskError,
        meta_overrides: dict[str, Any],
    ) -> str:
        envelope = execution.envelope
        now = utcnow(self.worker.app.clock)
        retry_envelope = envelope.with_changes(
            attempt=envelope.attempt + 1,
            max_retries=max_retries,
            not_before=now + timedelta(seconds=delay),
            meta={**envelope.meta, **meta_overrides},
        )
        self.backend.set(
            envelope.id,
            TaskState.RETRIED,
            error=TaskError(error.type, error.message, error.traceback, True, error.meta),
            attempt=envelope.attempt,
            meta=self._meta(execution, retryDelayMs=round(delay * 1000)),
            owner=execution.owner,
        )
        if not self.broker.reschedule(execution.delivery, retry_envelope):
            return self._lost(execution)
        return "retried"

    def _fail(self, execution: Execution, error: TaskError, reason: str, **extra: Any) -> str:
        envelope = execution.envelope
        final = TaskError(error.type, error.message, error.traceback, False, error.meta)
        status_meta = self._meta(execution, failedAt=iso(utcnow(self.worker.app.clock)), **extra)
        written = self.backend.set(
            envelope.id,
            TaskState.FAILED,
            error=final,
            attempt=envelope.attempt,
            meta=status_meta,
            owner=execution.owner,
        )
        if not written:
            return self._lost(execution)
        status = TaskStatus(
            envelope.id, TaskState.FAILED, None, final, envelope.attempt, status_meta
        )
        if not self._follow_up(execution.delivery, partial(after_failure, self, envelope, status)):
            return "released"
        dead = self.broker.dead_letter(
            execution.delivery, reason=reason, meta={"error": f"{final.type}: {final.message}"}
        )
        if not dead:
            return self._lost(execution)
        return "failed"

    # -- terminal states decided before the body runs ----------

    def _end_unrun(
        self,
        delivery: Any,
        state: TaskState,
        error: TaskError,
        extra_meta: dict[str, Any],
        dead_letter_reason: str | None,
    ) -> None:
        """End a job this worker holds but will not run: store its final status (taking
        the record over, as a fresh lease may), report it to its group, then ack or
        dead-letter it. A status refused (a newer lease wrote one) ends nothing."""
        envelope = delivery.envelope
        meta = {**envelope.meta, "queue": envelope.queue, **extra_meta}
        written = self.backend.set(
            envelope.id,
            state,
            error=error,
            attempt=envelope.attempt,
            meta=meta,
            owner=delivery.receipt,
            take_over=True,
            epoch=lease_epoch(delivery),
        )
        if not written:
            log.warning("job %s: a newer lease owns its status; left to it", envelope.id)
            self.broker.nack(delivery, requeue=True)  # refused too if the lease is gone
            return
        status = TaskStatus(envelope.id, state, None, error, envelope.attempt, meta)
        if not self._follow_up(delivery, partial(report_to_group, self, envelope, status)):
            return
        if dead_letter_reason is None:
            self.broker.ack(delivery)
        else:
            self.broker.dead_letter(
                delivery, reason=dead_letter_reason, meta={"error": error.message}
            )

    def cancel_expired(self, delivery: Any, expired_at: str) -> None:
        """The job expired before it could run: cancelled, and its body never runs."""
        error = TaskError("TaskExpired", f"task expired at {expired_at} before it could run")
        extra = {"stem.expired": True, "expiredAt": iso(utcnow(self.worker.app.clock))}
        self._end_unrun(delivery, TaskState.CANCELLED, error, extra, None)

    def fail_unregistered(self, delivery: Any) -> None:
        """No task of this name here: dead-letter it and fail its status (so a waiter or
        a group does not wait forever)."""
        message = (
            f"no task named {delivery.envelope.name!r} is registered with worker {self.worker.name}"
        )
        error = TaskError("TaskNotRegistered", message)
        self._end_unrun(delivery, TaskState.FAILED, error, {}, "unregistered-task")

    def fail_poisoned(self, delivery: Any) -> None:
        """A job that keeps coming back without ever being settled (its worker died each
        time): stop the loop, fail it and keep it in the dead-letter store."""
        error = TaskError(
            "WorkerLostError",
            f"the job was delivered {delivery.delivery_count} times without finishing; "
            "each worker that ran it stopped (crash, kill or lost lease)",
        )
        self._end_unrun(delivery, TaskState.FAILED, error, {}, "delivery-limit-exceeded")


def _allowed(outcome: Outcome, policy: RetryPolicy | None) -> bool:
    """The policy's exception filters, applied to the names the outcome carries."""
    if policy is None:
        return True
    names = set(outcome.exc_names)
    if names & set(policy.dont_auto_retry_for):
        return False
    return not policy.auto_retry_for or bool(names & set(policy.auto_retry_for))


__all__ = ["Settler", "resolve_policy"]
