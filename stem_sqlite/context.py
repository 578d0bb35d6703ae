"""TaskContext: what a bound task (``bind=True``) can see and do while it runs.

The same surface works in the thread pool and in the process pool: the context
talks to a channel, which in a thread calls the worker directly and in a pool
process sends a message to the worker, the only writer of the database files.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Protocol

from .codec import check_json
from .errors import InvalidArgument, Retry
from .model import Envelope
from .options import EnqueueOptions, RetryPolicy
from .timeutil import Duration, optional_seconds, require_aware, to_seconds


class ContextChannel(Protocol):
    """How a context reaches its worker."""

    def enqueue(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: EnqueueOptions
    ) -> str: ...

    def heartbeat(self) -> bool: ...

    def extend_lease(self, by: float) -> bool: ...

    def progress(self, percent: float, data: Any) -> None: ...

    def is_revoked(self) -> bool: ...


class TaskContext:
    """The running task's identity and its ways to talk to the worker."""

    def __init__(self, envelope: Envelope, channel: ContextChannel) -> None:
        self._envelope = envelope
        self._channel = channel

    @property
    def id(self) -> str:
        return self._envelope.id

    @property
    def attempt(self) -> int:
        """0 on the first run, 1 on the first retry, and so on."""
        return self._envelope.attempt

    @property
    def name(self) -> str:
        return self._envelope.name

    @property
    def queue(self) -> str:
        return self._envelope.queue

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self._envelope.headers)

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._envelope.meta)

    @property
    def args(self) -> tuple[Any, ...]:
        return self._envelope.args

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self._envelope.kwargs)

    @property
    def max_retries(self) -> int:
        return self._envelope.max_retries

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    def enqueue(
        self,
        name: str,
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
        *,
        headers: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        not_before: datetime | None = None,
        options: EnqueueOptions | None = None,
        add_to_parent: bool = True,
    ) -> str:
        """Enqueue a child task and return its id.

        The child inherits lineage (``stem.parentTaskId``, ``stem.rootTaskId``, unless
        ``add_to_parent=False``), tracing and tenant headers and the parent's own meta,
        never the parent's control keys (group, callbacks, retry policy, expiry, limits).
        """
        if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
            raise InvalidArgument(f"args must be a list or tuple, got {args!r}")
        if not_before is not None:
            require_aware(not_before, name="not_before")
        base = options or EnqueueOptions()
        merged = base.merged(
            headers={**(base.headers or {}), **(headers or {})} or None,
            meta={**(base.meta or {}), **(meta or {})} or None,
            eta=not_before if base.eta is None and base.countdown is None else None,
        )
        if not add_to_parent:
            merged = merged.merged(add_to_parent=False)
        return self._channel.enqueue(name, tuple(args), dict(kwargs or {}), merged)

    spawn = enqueue

    def heartbeat(self) -> bool:
        """Renew this task's lease by its full length now; False if the lease was lost."""
        return self._channel.heartbeat()

    def extend_lease(self, by: Duration) -> bool:
        """Make the lease end ``by`` seconds from now; False if the lease was lost."""
        return self._channel.extend_lease(to_seconds(by, name="by", allow_zero=False))

    def progress(self, percent: float, data: Any = None) -> None:
        """Record progress (0-100, with optional JSON data) in the task's status meta."""
        if (
            isinstance(percent, bool)
            or not isinstance(percent, (int, float))
            or math.isnan(percent)
        ):
            raise InvalidArgument(f"percent must be a number from 0 to 100, got {percent!r}")
        if not 0 <= percent <= 100:
            raise InvalidArgument(f"percent must be from 0 to 100, got {percent!r}")
        check_json(data, where="progress data")
        self._channel.progress(float(percent), data)

    def retry(
        self,
        *,
        countdown: Duration | None = None,
        eta: datetime | None = None,
        retry_policy: RetryPolicy | None = None,
        max_retries: int | None = None,
        time_limit: Duration | None = None,
        soft_time_limit: Duration | None = None,
        exc: BaseException | None = None,
    ) -> Retry:
        """End this attempt and schedule another (never returns: it raises ``Retry``).

        ``countdown`` or ``eta`` set when; otherwise the retry policy's delay is used.
        When retries are exhausted the task fails (with ``exc`` as its error if given).
        """
        if countdown is not None and eta is not None:
            raise InvalidArgument("give countdown or eta, not both")
        raise Retry(
            countdown=optional_seconds(countdown, name="countdown"),
            eta=require_aware(eta, name="eta") if eta is not None else None,
            retry_policy=retry_policy,
            max_retries=max_retries,
            time_limit=optional_seconds(time_limit, name="time_limit"),
            soft_time_limit=optional_seconds(soft_time_limit, name="soft_time_limit"),
            exc=exc,
        )

    def is_revoked(self) -> bool:
        """True when the worker asked running tasks to stop (soft shutdown)."""
        return self._channel.is_revoked()
