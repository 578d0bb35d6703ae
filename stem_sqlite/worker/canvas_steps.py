"""What a worker does for the canvas after a task settles: continue or break a chain,
and fire (or fail) a chord's callback exactly once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..canvas import META_CHAIN, META_CHORD_CALLBACK
from ..model import Envelope, GroupStatus, TaskError, TaskState
from ..options import META_LINK_ERROR
from ..producer import build_envelope
from ..signature import Signature
from ..timeutil import utcnow

if TYPE_CHECKING:
    from .settle import Settler

log = logging.getLogger("stem_sqlite.worker")


def continue_chain(settler: Settler, envelope: Envelope, result: Any) -> None:
    """Enqueue the next step of the chain with ``result`` as its first argument."""
    rest = envelope.meta.get(META_CHAIN) or []
    if not rest:
        return
    app = settler.worker.app
    step = Signature.from_dict(rest[0])
    options = step.enqueue_options()
    options = options.merged(meta={**(options.meta or {}), META_CHAIN: rest[1:]})
    next_envelope = build_envelope(
        step.name,
        (result, *step.args),
        step.kwargs,
        options,
        task_defaults=app.tasks.get(step.name),
        parent=envelope,
        clock=app.clock,
    )
    app.publish(next_envelope, options)


def break_chain(settler: Settler, envelope: Envelope, error: TaskError) -> None:
    """Mark every later step of a chain failed: they will never run."""
    for item in envelope.meta.get(META_CHAIN) or []:
        step = Signature.from_dict(item)
        step_id = step.enqueue_options().task_id
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


def settle_chord(settler: Settler, group: GroupStatus) -> None:
    """Once every header task has ended, fire the callback (all succeeded) or fail it
    and run its link_error; ``claim_chord`` makes sure only one worker does either."""
    data = group.meta.get(META_CHORD_CALLBACK)
    if not isinstance(data, dict) or not group.is_complete:
        return
    app = settler.worker.app
    callback = Envelope.from_dict(data)
    now = utcnow(app.clock)
    if not settler.backend.claim_chord(group.id, callback_task_id=callback.id, dispatched_at=now):
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
        settler.dispatch_links(callback, META_LINK_ERROR)
        log.warning(
            "chord %s failed: header task %s ended %s", group.id, first.id, first.state.value
        )
        return
    fired = callback.with_changes(
        args=([s.payload for s in statuses], *callback.args),
        enqueued_at=now,
        meta={**callback.meta, "chordId": group.id},
    )
    app.publish(fired)
