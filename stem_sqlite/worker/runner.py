"""Running one task body, the same way in a worker thread and in a pool process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..context import ContextChannel, TaskContext
from ..model import Envelope
from .outcome import Outcome, outcome_from_exception, success_outcome


def run_body(
    fn: Callable[..., Any],
    bind: bool,
    envelope: Envelope,
    channel: ContextChannel,
    guard: Any = None,
) -> Outcome:
    """Call the task function with the envelope's arguments and classify what happened.

    ``guard`` (optional) is told when the body starts and ends, so that time limits
    are only ever injected while the body itself runs.
    """
    try:
        try:
            if guard is not None:
                guard.enter()
            if bind:
                value = fn(TaskContext(envelope, channel), *envelope.args, **envelope.kwargs)
            else:
                value = fn(*envelope.args, **envelope.kwargs)
        finally:
            if guard is not None:
                guard.leave()
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) and guard is None:
            raise
        return outcome_from_exception(exc)
    return success_outcome(value, envelope.name)
