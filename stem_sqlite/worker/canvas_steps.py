"""What a worker does after a task ends and before it acks the job: report it to its
group (and fire or fail the chord's callback exactly once), dispatch its links, and
continue or break its chain.

These follow-ups come before the ack, so a worker that dies in between loses none of
them: the job is delivered again and its re-run does them again. They are safe to
repeat. A follow-up job has a fixed id (a chain step's or chord callback's own id, or
one derived from the parent), so a second publish finds the first: a status past
``queued`` means it has run or is running, and the broker replaces a waiting copy in
place and refuses one that runs (``JobInFlight``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..canvas import META_CHAIN, META_CHORD_CALLBACK
from ..errors import JobInFlight
from ..ids import derived_id
from ..model import Envelope, GroupStatus, TaskError, TaskState, TaskStatus
from ..options import HEADER_GROUP_ID, META_LINK, META_LINK_ERROR, EnqueueOptions
from ..producer import build_envelope
from ..signature import Signature
from ..timeutil import iso, utcnow

if TYPE_CHECKING:
    from .settle import Settler

log = logging.getLogger("stem_sqlite.worker")


def after_success(settler: Settler, envelope: Envelope, status: TaskStatus, value: Any) -> None:
    """The follow-ups of a success: group, ``link`` callbacks, next chain step.
    Raises when one could not be stored; the caller then does not ack."""
    report_to_group(settler, envelope, status)
    dispatch_links(settler, envelope, META_LINK)
    continue_chain(settler, envelope, status.payload if status.payload is not None else value)


def after_failure(settler: Settler, envelope: Envelope, status: TaskStatus) -> None:
    """The follow-ups of a final failure: group, ``link_error`` callbacks, the rest of
    the chain marked failed."""
    report_to_group(settler, envelope, status)
    dispatch_links(settler, envelope, META_LINK_ERROR)
    if status.error is not None:
        break_chain(settler, envelope, status.error)


def publish_follow_up(
    settler: Settler, envelope: Envelope, options: EnqueueOptions | None = None
) -> bool:
    """Publish a follow-up job unless an earlier run of its parent already did; True
    when it was published (or a waiting copy replaced)."""
    status = settler.backend.get(envelope.id)
    if status is not None and status.state is not TaskState.QUEUED:
        return False
    try:
        settler.worker.app.publish(envelope, options)
    except JobInFlight:
        return False
    return True


def follow_up_id(parent: Envelope, *parts: str) -> str:
    """The fixed id of a follow-up of ``parent`` that has none of its own. The time the
    parent was enqueued is part of it (retries keep it): a later enqueue of the same
    task id gets follow-ups of its own, not the ids of the earlier ones."""
    return derived_id(parent.id, iso(parent.enqueued_at), *parts)


def child_envelope(
    app: Any, parent: Envelope, signature: Signature, args: Any, options: EnqueueOptions
) -> Envelope:
    """The envelope of a follow-up call of ``signature`` made by ``parent``'s run."""
    return build_envelope(
        signature.name,
        args,
        signature.kwargs,
        options,
        task_defaults=app.tasks.get(signature.name),
        parent=parent,
        clock=app.clock,
    )


def dispatch_links(settler: Settler, envelope: Envelope, key: str) -> None:
    """Publish the ``link`` (or ``link_error``) callbacks stored under ``key``. One that
    cannot be built (a damaged signature) is logged and skipped: it never could be."""
    app = settler.worker.app
    for index, item in enumerate(envelope.meta.get(key) or ()):
        try:
            signature = Signature.from_dict(item)
            options: EnqueueOptions = signature.enqueue_options()
            if not options.task_id:
                options = options.merged(task_id=follow_up_id(envelope, key, str(index)))
            link_envelope = child_envelope(app, envelope, signature, signature.args, options)
        except (ValueError, TypeError, KeyError):
            log.exception("the %s callback of task %s cannot be built; skipped", key, envelope.id)
            continue
        publish_follow_up(settler, link_envelope, options)


def continue_chain(settler: Settler, envelope: Envelope, result: Any) -> None:
    """Enqueue the next step of the chain with ``result`` as its first argument."""
    rest = envelope.meta.get(META_CHAIN) or []
    if not rest:
        return
    app = settler.worker.app
    try:
        step = Signature.from_dict(rest[0])
        options = step.enqueue_options()
        options = options.merged(
            task_id=options.task_id or follow_up_id(envelope, META_CHAIN),
            meta={**(options.meta or {}), META_CHAIN: rest[1:]},
        )
        next_envelope = child_envelope(app, envelope, step, (result, *step.args), options)
    except (ValueError, TypeError, KeyError):
        # A damaged step, or a result it cannot take: running the parent again would not
        # mend it. The chain ends here, in the log.
        log.exception("the next step of the chain of task %s cannot be built", envelope.id)
        return
    publish_follow_up(settler, next_envelope, options)


def break_chain(settler: Settler, envelope: Envelope, error: TaskError) -> None:
    """Mark every later step of a chain failed: they will never run."""
    for item in envelope.meta.get(META_CHAIN) or []:
        try:
            step = Signature.from_dict(item)
            step_id = step.enqueue_options().task_id
        except (ValueError, TypeError, KeyError):
            log.exception("a later step of the chain of task %s cannot be read", envelope.id)
            continue
        if not step_id:
            continue
        settler.backend.set(
            step_id,
            TaskState.FAILED,
            error=TaskError(
                "ChainBroken",
                f"an earlier step of the chain, {envelope.name}[{envelope.id}], failed: "
                f"{error.type}: {error.message}",
            ),
            meta={"task": step.name, "stem.task": step.name, "queue": envelope.queue},
        )


def report_to_group(settler: Settler, envelope: Envelope, status: TaskStatus) -> None:
    """Store the member's result in its group, then settle the chord if it is complete."""
    group_id = envelope.headers.get(HEADER_GROUP_ID)
    if not group_id:
        return
    group = settler.backend.add_group_result(str(group_id), status)
    if group is not None:
        settle_chord(settler, group, member_id=envelope.id)


def settle_chord(settler: Settler, group: GroupStatus, *, member_id: str) -> None:
    """Once every header task has ended, fire the callback (all succeeded) or fail it
    and run its link_error. ``claim_chord`` lets one member do it; that member's re-run
    may claim again and finish what a crash interrupted."""
    data = group.meta.get(META_CHORD_CALLBACK)
    if not isinstance(data, dict) or not group.is_complete:
        return
    app = settler.worker.app
    try:
        callback = Envelope.from_dict(data)
    except (ValueError, TypeError, KeyError):
        log.exception("the chord callback of group %s cannot be read; it cannot run", group.id)
        return
    now = utcnow(app.clock)
    if not settler.backend.claim_chord(
        group.id, callback_task_id=callback.id, dispatched_at=now, claimed_by=member_id
    ):
        return
    statuses = list(group.results.values())  # in header order
    failed = [s for s in statuses if s.state is not TaskState.SUCCEEDED]
    if failed:
        first = failed[0]
        cause = f"{first.error.type}: {first.error.message}" if first.error else first.state.value
        settler.backend.set(
            callback.id,
            TaskState.FAILED,
            error=TaskError(
                "ChordError",
                f"chord header task {first.id} ended "
                f"{first.state.value} ({cause}); the callback did not run",
            ),
            meta={
                **callback.meta,
                "task": callback.name,
                "queue": callback.queue,
                "chordId": group.id,
            },
        )
        dispatch_links(settler, callback, META_LINK_ERROR)
        log.warning(
            "chord %s failed: header task %s ended %s", group.id, first.id, first.state.value
        )
        return
    fired = callback.with_changes(
        args=([s.payload for s in statuses], *callback.args),
        enqueued_at=now,
        meta={**callback.meta, "chordId": group.id},
    )
    publish_follow_up(settler, fired)
