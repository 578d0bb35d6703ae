"""Turning a task call and its options into an envelope (shared by the app, the task
context and link dispatch, so every path applies the same rules)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .errors import InvalidArgument
from .model import Envelope, clean_queue_name
from .options import (
    COMPOSITION_META_KEYS,
    META_EXPIRES_AT,
    META_IGNORE_RESULT,
    META_LINK,
    META_LINK_ERROR,
    META_PARENT_ATTEMPT,
    META_PARENT_ID,
    META_RETRY_POLICY,
    META_ROOT_ID,
    META_SOFT_TIME_LIMIT_MS,
    META_TASK,
    META_TIME_LIMIT_MS,
    EnqueueOptions,
)
from .signature import as_signatures
from .timeutil import Clock, iso, optional_seconds, require_aware, to_seconds, utcnow

_INFORMATIONAL = {
    "shadow": "stem.shadow",
    "reply_to": "stem.replyTo",
    "serializer": "stem.serializer",
    "compression": "stem.compression",
    "exchange": "stem.exchange",
    "routing_key": "stem.routingKey",
}


def inherited_from(
    parent: Envelope, *, add_to_parent: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Headers and meta a child task takes from its parent.

    Only lineage, tracing and tenant data pass down: headers whose names start with
    ``stem-`` and meta keys under ``stem.`` (group, callbacks, retry policy, expiry,
    time limits) control the parent's own run and are dropped.
    """
    headers = {k: v for k, v in parent.headers.items() if not k.startswith("stem-")}
    meta = {
        k: v
        for k, v in parent.meta.items()
        if not k.startswith("stem.") and k not in COMPOSITION_META_KEYS and not k.startswith("__")
    }
    if add_to_parent:
        meta[META_PARENT_ID] = parent.id
        meta[META_PARENT_ATTEMPT] = parent.attempt
        meta[META_ROOT_ID] = parent.meta.get(META_ROOT_ID) or parent.id
    return headers, meta


def build_envelope(
    name: str,
    args: Any,
    kwargs: dict[str, Any] | None,
    options: EnqueueOptions,
    *,
    task_defaults: Any = None,
    parent: Envelope | None = None,
    clock: Clock,
) -> Envelope:
    """The envelope for one call of ``name``. Explicit options beat the task's defaults.

    Raises ``InvalidArgument`` (ValueError) for contradictory or malformed options and
    ``InvalidPayload`` (TypeError) naming the key of a value that is not JSON.
    """
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise InvalidArgument(f"args must be a list or tuple, got {args!r}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise InvalidArgument(f"kwargs must be a dict, got {type(kwargs).__name__}")
    for label in ("headers", "meta"):
        given = getattr(options, label)
        if given is not None and not isinstance(given, dict):
            raise InvalidArgument(f"{label} must be a dict, got {type(given).__name__}")
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument(f"the task name must be a non-empty string, got {name!r}")
    kwargs = dict(kwargs or {})
    defaults = task_defaults
    headers: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    if parent is not None:
        headers, meta = inherited_from(parent, add_to_parent=options.add_to_parent)
    headers.update(options.headers or {})
    meta.update(options.meta or {})
    meta[META_TASK] = name

    now = utcnow(clock)
    not_before = _not_before(options, now)
    expires = options.expires
    if expires is not None:
        if isinstance(expires, datetime):
            expires_at = require_aware(expires, name="expires")
        else:
            expires_at = now + timedelta(seconds=to_seconds(expires, name="expires"))
        meta[META_EXPIRES_AT] = iso(expires_at)

    time_limit = _first(options.time_limit, getattr(defaults, "time_limit", None))
    soft_limit = _first(options.soft_time_limit, getattr(defaults, "soft_time_limit", None))
    if time_limit is not None:
        meta[META_TIME_LIMIT_MS] = round(to_seconds(time_limit, name="time_limit") * 1000)
    if soft_limit is not None:
        meta[META_SOFT_TIME_LIMIT_MS] = round(to_seconds(soft_limit, name="soft_time_limit") * 1000)
    if options.ignore_result is not None:
        meta[META_IGNORE_RESULT] = bool(options.ignore_result)
    policy = options.retry_policy
    if policy is not None:
        meta[META_RETRY_POLICY] = policy.to_dict()
    if options.link is not None:
        meta[META_LINK] = [sig.to_dict() for sig in as_signatures(options.link, "link")]
    if options.link_error is not None:
        meta[META_LINK_ERROR] = [
            sig.to_dict() for sig in as_signatures(options.link_error, "link_error")
        ]
    for option, key in _INFORMATIONAL.items():
        value = getattr(options, option)
        if value is not None:
            meta[key] = value

    max_retries = _first(
        policy.max_retries if policy else None,
        options.max_retries,
        getattr(getattr(defaults, "retry_policy", None), "max_retries", None),
        getattr(defaults, "max_retries", None),
        0,
    )
    queue = options.queue or getattr(defaults, "queue", None) or "default"
    priority = _first(options.priority, getattr(defaults, "priority", None), 0)
    visibility = optional_seconds(
        _first(options.visibility_timeout, getattr(defaults, "visibility_timeout", None)),
        name="visibility_timeout",
    )
    envelope_fields: dict[str, Any] = {
        "name": name,
        "args": tuple(args),
        "kwargs": kwargs,
        "queue": clean_queue_name(queue),
        "priority": priority,
        "max_retries": max_retries,
        "not_before": not_before,
        "enqueued_at": now,
        "visibility_timeout": visibility,
        "headers": headers,
        "meta": meta,
    }
    if options.task_id is not None:
        if not isinstance(options.task_id, str) or not options.task_id.strip():
            raise InvalidArgument(f"task_id must be a non-empty string, got {options.task_id!r}")
        envelope_fields["id"] = options.task_id
    return Envelope(**envelope_fields)  # JSON is checked when it is encoded, before any write


def _not_before(options: EnqueueOptions, now: datetime) -> datetime | None:
    if options.countdown is not None and options.eta is not None:
        raise InvalidArgument("give countdown or eta, not both")
    if options.countdown is not None:
        return now + timedelta(seconds=to_seconds(options.countdown, name="countdown"))
    if options.eta is not None:
        return require_aware(options.eta, name="eta")
    return None


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None
