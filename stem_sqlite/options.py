"""Options of a task and of one enqueue: retry policy, enqueue options, reserved meta keys."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from .errors import InvalidArgument
from .timeutil import Duration, optional_seconds

# Reserved meta keys (the original's names, so tooling that reads them keeps working).
META_TASK = "stem.task"
META_RETRY_POLICY = "stem.retryPolicy"
META_TIME_LIMIT_MS = "stem.timeLimitMs"
META_SOFT_TIME_LIMIT_MS = "stem.softTimeLimitMs"
META_EXPIRES_AT = "stem.expiresAt"
META_IGNORE_RESULT = "stem.ignoreResult"
META_LINK = "stem.link"
META_LINK_ERROR = "stem.linkError"
META_PARENT_ID = "stem.parentTaskId"
META_PARENT_ATTEMPT = "stem.parentAttempt"
META_ROOT_ID = "stem.rootTaskId"
META_GROUP_INDEX = "stem.groupIndex"
META_PROGRESS = "stem.progress"
HEADER_GROUP_ID = "stem-group-id"

#: Keys a child task never inherits from its parent: everything that controls the
#: parent's own execution (group membership, callbacks, retries, expiry, limits).
COMPOSITION_META_KEYS = frozenset(
    {"groupId", "chainId", "chainIndex", "chainPrevResult", "chordId", "chordResults", "uniqueKey"}
)


def _names(values: Any) -> tuple[str, ...]:
    """Exception classes or names, as the names stored in the policy."""
    names = []
    for value in values or ():
        if isinstance(value, type) and issubclass(value, BaseException):
            names.append(value.__name__)
        elif isinstance(value, str) and value:
            names.append(value)
        else:
            raise InvalidArgument(f"expected an exception class or its name, got {value!r}")
    return tuple(names)


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing task is retried.

    ``default_delay`` is the first delay in seconds; with ``backoff`` it doubles each
    attempt up to ``backoff_max``; ``jitter`` takes up to a quarter off at random.
    ``auto_retry_for`` (when not empty) lists the only exceptions that are retried;
    ``dont_auto_retry_for`` lists exceptions that never are. ``max_retries`` overrides
    the task's.
    """

    max_retries: int | None = None
    backoff: bool = False
    backoff_max: float | None = None
    jitter: bool = True
    default_delay: float = 0.0
    auto_retry_for: tuple[str, ...] = ()
    dont_auto_retry_for: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_retries is not None and (
            not isinstance(self.max_retries, int) or self.max_retries < 0
        ):
            raise InvalidArgument(f"max_retries must be 0 or more, got {self.max_retries!r}")
        delay = optional_seconds(self.default_delay, name="default_delay") or 0.0
        object.__setattr__(self, "default_delay", delay)
        cap = optional_seconds(self.backoff_max, name="backoff_max")
        object.__setattr__(self, "backoff_max", cap)
        object.__setattr__(self, "auto_retry_for", _names(self.auto_retry_for))
        object.__setattr__(self, "dont_auto_retry_for", _names(self.dont_auto_retry_for))

    def to_dict(self) -> dict[str, Any]:
        return {
            "maxRetries": self.max_retries,
            "backoff": self.backoff,
            "backoffMaxMs": None if self.backoff_max is None else round(self.backoff_max * 1000),
            "jitter": self.jitter,
            "defaultDelayMs": round(self.default_delay * 1000),
            "autoRetryFor": list(self.auto_retry_for),
            "dontAutoRetryFor": list(self.dont_auto_retry_for),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetryPolicy:
        cap = data.get("backoffMaxMs")
        return cls(
            max_retries=data.get("maxRetries"),
            backoff=bool(data.get("backoff", False)),
            backoff_max=None if cap is None else cap / 1000,
            jitter=bool(data.get("jitter", True)),
            default_delay=(data.get("defaultDelayMs") or 0) / 1000,
            auto_retry_for=tuple(data.get("autoRetryFor") or ()),
            dont_auto_retry_for=tuple(data.get("dontAutoRetryFor") or ()),
        )


@dataclass(frozen=True)
class EnqueueOptions:
    """The keywords of ``apply_async`` as one object (for ``app.enqueue`` and ``ctx.enqueue``).

    ``exchange``, ``routing_key``, ``serializer`` (only ``"json"`` is used),
    ``compression``, ``shadow`` and ``reply_to`` are kept in the envelope meta for
    information; SQLite has no use for them.
    """

    task_id: str | None = None
    queue: str | None = None
    priority: int | None = None
    countdown: Duration | None = None
    eta: datetime | None = None
    expires: Duration | datetime | None = None
    time_limit: Duration | None = None
    soft_time_limit: Duration | None = None
    ignore_result: bool | None = None
    max_retries: int | None = None
    retry_policy: RetryPolicy | None = None
    link: Any = None
    link_error: Any = None
    headers: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    shadow: str | None = None
    reply_to: str | None = None
    serializer: str | None = None
    compression: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    retry: bool = False
    retry_policy_publish: RetryPolicy | None = None
    add_to_parent: bool = True
    visibility_timeout: Duration | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def merged(self, **overrides: Any) -> EnqueueOptions:
        """A copy where every override that is not None wins."""
        known = _option_names()
        unknown = set(overrides) - known
        if unknown:
            raise InvalidArgument(
                f"unknown enqueue option(s): {', '.join(sorted(unknown))}; "
                f"known options are {', '.join(sorted(known - {'extras'}))}"
            )
        changes = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **changes) if changes else self


#: The options of a call that gives none (frozen, so one instance serves every call).
NO_OPTIONS = EnqueueOptions()


@functools.cache
def _option_names() -> frozenset[str]:
    return frozenset(f.name for f in fields(EnqueueOptions))
