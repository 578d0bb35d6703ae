"""The data that moves between producers, brokers, workers and result backends.

Every type here is a frozen dataclass that knows how to turn itself into a JSON
object and back, so any engine (SQLite now, PostgreSQL or Redis later) can store
it without knowing its Python shape.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from .codec import check_json, encode_json, keys_are_text
from .errors import InvalidArgument, InvalidPayload
from .ids import new_id
from .timeutil import (
    Duration,
    iso,
    optional_seconds,
    parse_iso,
    require_aware,
    utcnow,
)

JSONDict = dict[str, Any]


_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")


def has_control_characters(text: str) -> bool:
    """Names and ids are printed in logs and tables: control characters would garble them."""
    return _CONTROL_CHARACTER.search(text) is not None


def clean_queue_name(queue: object, *, name: str = "queue") -> str:
    """Trim a queue name and refuse an empty one or one that is not text."""
    if not isinstance(queue, str):
        raise InvalidArgument(f"{name} must be a string, got {queue!r}")
    if has_control_characters(queue):
        raise InvalidArgument(f"{name} must not contain control characters, got {queue!r}")
    trimmed = queue.strip()
    if not trimmed:
        raise InvalidArgument(f"{name} must not be empty; pass a name such as 'default'")
    if len(trimmed) > 200:
        raise InvalidArgument(f"{name} is longer than 200 characters: {trimmed[:40]!r}...")
    return trimmed


INT_LIMIT = 2**62  # comfortably inside SQLite's 64-bit integers


def _check_int(value: object, *, name: str, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name} must be an integer, got {value!r}")
    if not -INT_LIMIT <= value <= INT_LIMIT:
        raise InvalidArgument(f"{name} must be between -2**62 and 2**62, got {value}")
    if minimum is not None and value < minimum:
        raise InvalidArgument(f"{name} must be {minimum} or more, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Envelope:
    """One task invocation as it travels through the broker.

    ``id`` stays the same across retries; ``attempt`` counts deliveries from 0.
    ``not_before`` delays delivery; ``visibility_timeout`` (seconds) overrides the
    broker's default lease for this job. Higher ``priority`` is served first.
    """

    name: str
    args: tuple[Any, ...] = ()
    kwargs: JSONDict = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    queue: str = "default"
    priority: int = 0
    attempt: int = 0
    max_retries: int = 0
    not_before: datetime | None = None
    enqueued_at: datetime = field(default_factory=utcnow)
    visibility_timeout: float | None = None
    headers: JSONDict = field(default_factory=dict)
    meta: JSONDict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidArgument(f"task name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.id, str) or not self.id.strip():
            raise InvalidArgument(f"envelope id must be a non-empty string, got {self.id!r}")
        for label, text in (("task name", self.name), ("task id", self.id)):
            if has_control_characters(text):
                raise InvalidArgument(f"the {label} must not contain control characters: {text!r}")
        set_ = object.__setattr__
        set_(self, "queue", clean_queue_name(self.queue))
        if isinstance(self.args, list):
            set_(self, "args", tuple(self.args))
        elif not isinstance(self.args, tuple):
            raise InvalidArgument(f"args must be a list or tuple, got {type(self.args).__name__}")
        for label in ("kwargs", "headers", "meta"):
            if not isinstance(getattr(self, label), dict):
                raise InvalidArgument(f"{label} must be a dict, got {getattr(self, label)!r}")
        _check_int(self.priority, name="priority")
        _check_int(self.attempt, name="attempt", minimum=0)
        _check_int(self.max_retries, name="max_retries", minimum=0)
        if self.not_before is not None:
            set_(self, "not_before", require_aware(self.not_before, name="not_before"))
        set_(self, "enqueued_at", require_aware(self.enqueued_at, name="enqueued_at"))
        visibility: Duration | None = self.visibility_timeout
        if visibility is not None:
            seconds = optional_seconds(visibility, name="visibility_timeout")
            if seconds == 0:
                raise InvalidArgument("visibility_timeout must be more than zero seconds")
            set_(self, "visibility_timeout", seconds)

    def to_json(self) -> str:
        """The envelope as stored: compact JSON text. Raises ``InvalidPayload`` (a
        ``TypeError``) naming the key when args, kwargs, headers or meta are not JSON."""
        try:
            data = self.to_dict()
            # Only the caller's values can hold a key that is not text; the rest is ours.
            if not (
                keys_are_text(data["args"])
                and keys_are_text(self.kwargs)
                and keys_are_text(self.headers)
                and keys_are_text(self.meta)
            ):
                raise TypeError("a JSON object key is not text")
            return encode_json(data)
        except (TypeError, ValueError, RecursionError):
            for part, value in (
                ("args", list(self.args)),
                ("kwargs", self.kwargs),
                ("headers", self.headers),
                ("meta", self.meta),
            ):
                check_json(value, where=part)
            raise InvalidPayload(
                f"envelope {self.id} cannot be stored as JSON (nested too deeply?)"
            ) from None

    def check_json(self) -> None:
        """Raise ``InvalidPayload`` naming the key if args, kwargs, headers or meta are not JSON."""
        self.to_json()

    def with_changes(self, **changes: Any) -> Envelope:
        """A copy with some fields replaced (validated like a new envelope)."""
        return replace(self, **changes)

    def to_dict(self) -> JSONDict:
        return {
            "id": self.id,
            "name": self.name,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "queue": self.queue,
            "priority": self.priority,
            "attempt": self.attempt,
            "max_retries": self.max_retries,
            "not_before": iso(self.not_before) if self.not_before else None,
            "enqueued_at": iso(self.enqueued_at),
            "visibility_timeout": self.visibility_timeout,
            "headers": self.headers,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: JSONDict) -> Envelope:
        not_before = data.get("not_before")
        enqueued_at = data.get("enqueued_at")
        return cls(
            id=data["id"],
            name=data["name"],
            args=tuple(data.get("args") or ()),
            kwargs=dict(data.get("kwargs") or {}),
            queue=data.get("queue") or "default",
            priority=int(data.get("priority") or 0),
            attempt=int(data.get("attempt") or 0),
            max_retries=int(data.get("max_retries") or 0),
            not_before=parse_iso(not_before) if not_before else None,
            enqueued_at=parse_iso(enqueued_at) if enqueued_at else utcnow(),
            visibility_timeout=data.get("visibility_timeout"),
            headers=dict(data.get("headers") or {}),
            meta=dict(data.get("meta") or {}),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One lease on one job. ``receipt`` names this lease only: once the job is
    leased again, an old receipt can no longer ack, nack, extend or dead-letter it."""

    envelope: Envelope
    receipt: str
    lease_expires_at: datetime
    queue: str
    #: How many times this attempt of the job has been leased (1 on a first
    #: delivery; more after a worker died or lost its lease while running it).
    delivery_count: int = 1
    #: The length of this lease in seconds (what renewals extend it by).
    lease_duration: float = 0.0

    @property
    def id(self) -> str:
        return self.envelope.id


class TaskState(enum.StrEnum):
    """Where a task is in its life. Terminal states: succeeded, failed, cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def __str__(self) -> str:
        return self.value


_TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})


def coerce_state(value: TaskState | str) -> TaskState:
    try:
        return TaskState(value)
    except ValueError:
        known = ", ".join(s.value for s in TaskState)
        raise InvalidArgument(f"unknown task state {value!r}; use one of {known}") from None


@dataclass(frozen=True, slots=True)
class TaskError:
    """Why a task failed: exception type name, message, optional traceback text."""

    type: str
    message: str
    traceback: str | None = None
    retryable: bool = False
    meta: JSONDict = field(default_factory=dict)

    def to_dict(self) -> JSONDict:
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "retryable": self.retryable,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: JSONDict) -> TaskError:
        return cls(
            type=str(data.get("type") or "Unknown"),
            message=str(data.get("message") or ""),
            traceback=data.get("traceback"),
            retryable=bool(data.get("retryable", False)),
            meta=dict(data.get("meta") or {}),
        )


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """The stored state of one task: its state, result payload or error, and meta."""

    id: str
    state: TaskState
    payload: Any = None
    error: TaskError | None = None
    attempt: int = 0
    meta: JSONDict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """One ``ResultBackend.set`` call as data, for ``set_many`` (the same fields, the same
    meaning: see ``set``)."""

    task_id: str
    state: TaskState | str
    payload: Any = None
    error: TaskError | None = None
    attempt: int = 0
    meta: JSONDict | None = None
    ttl: float | timedelta | None = None
    owner: str | None = None
    take_over: bool = False
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class TaskStatusRecord:
    """A status with the times its record was created and last updated."""

    status: TaskStatus
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TaskStatusPage:
    items: list[TaskStatusRecord]
    next_offset: int | None = None


@dataclass(frozen=True, slots=True)
class GroupDescriptor:
    """A group to track: ``expected`` members, optional meta and TTL (seconds or timedelta)."""

    id: str
    expected: int
    meta: JSONDict = field(default_factory=dict)
    ttl: float | timedelta | None = None


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A group's member results, in member order (the ``stem.groupIndex`` meta key)."""

    id: str
    expected: int
    results: Mapping[str, TaskStatus]
    meta: JSONDict = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return len(self.results)

    @property
    def is_complete(self) -> bool:
        return self.completed >= self.expected


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    """A worker's periodic sign of life, as stored in the result backend."""

    worker_id: str
    timestamp: datetime
    inflight: int
    queues: list[JSONDict]
    concurrency: int
    last_lease_renewal: datetime | None = None
    version: str = "1"
    extras: JSONDict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    envelope: Envelope
    reason: str | None
    meta: JSONDict
    dead_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    entries: list[DeadLetterEntry]
    next_offset: int | None = None

    @property
    def has_more(self) -> bool:
        return self.next_offset is not None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    entries: list[DeadLetterEntry]
    dry_run: bool

    @property
    def count(self) -> int:
        return len(self.entries)
