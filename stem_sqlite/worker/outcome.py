"""What running a task body produced, in a form that crosses process boundaries."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Literal

from ..codec import dumps
from ..errors import InvalidPayload, Retry, SoftTimeLimitExceeded, TaskRevoked, TimeLimitExceeded
from ..model import TaskError
from ..options import RetryPolicy
from ..timeutil import iso

Kind = Literal["success", "error", "retry", "revoked"]


@dataclass
class Outcome:
    """The end of one attempt: a JSON result, an error, a retry request or a revocation."""

    kind: Kind
    value: Any = None
    error: TaskError | None = None
    #: The exception's class and base-class names, for auto_retry_for filters.
    exc_names: tuple[str, ...] = ()
    retry: dict[str, Any] = field(default_factory=dict)
    retryable: bool = True

    @property
    def exc_type(self) -> str:
        return self.exc_names[0] if self.exc_names else "Exception"


def error_outcome(exc: BaseException, *, retryable: bool = True) -> Outcome:
    names = tuple(cls.__name__ for cls in type(exc).__mro__ if cls not in (object,))
    error = TaskError(
        type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        retryable=retryable,
    )
    return Outcome("error", error=error, exc_names=names, retryable=retryable)


def outcome_from_exception(exc: BaseException) -> Outcome:
    """Classify an exception raised by a task body (or injected into it)."""
    if isinstance(exc, Retry):
        policy = exc.retry_policy
        return Outcome(
            "retry",
            retry={
                "countdown": exc.countdown,
                "eta": iso(exc.eta) if exc.eta is not None else None,  # type: ignore[arg-type]
                "retry_policy": policy.to_dict() if isinstance(policy, RetryPolicy) else None,
                "max_retries": exc.max_retries,
                "time_limit": exc.time_limit,
                "soft_time_limit": exc.soft_time_limit,
                "exc": error_outcome(exc.exc).error.to_dict() if exc.exc else None,  # type: ignore[union-attr]
            },
        )
    if isinstance(exc, TaskRevoked):
        return Outcome("revoked", error=error_outcome(exc).error)
    if isinstance(exc, TimeLimitExceeded):
        return error_outcome(exc, retryable=True)
    if isinstance(exc, SoftTimeLimitExceeded):
        return error_outcome(exc)
    return error_outcome(exc)


def success_outcome(value: Any, task_name: str) -> Outcome:
    """A success, unless the value cannot be stored as JSON (then a clear, final error)."""
    if (
        value is None
        or isinstance(value, (bool, int))
        or (isinstance(value, str) and value.isascii())
    ):
        return Outcome("success", value=value)  # always storable: no need to encode it twice
    try:
        dumps(value, where=f"the return value of {task_name}")
    except InvalidPayload as exc:
        return error_outcome(exc, retryable=False)
    return Outcome("success", value=value)
