"""Outcomes as plain dicts, for the pipe between a pool process and its worker."""

from __future__ import annotations

from typing import Any

from ..model import TaskError
from .outcome import Outcome


def outcome_to_wire(outcome: Outcome) -> dict[str, Any]:
    return {
        "kind": outcome.kind,
        "value": outcome.value,
        "error": outcome.error.to_dict() if outcome.error else None,
        "exc_names": list(outcome.exc_names),
        "retry": outcome.retry,
        "retryable": outcome.retryable,
    }


def outcome_from_wire(data: dict[str, Any]) -> Outcome:
    return Outcome(
        kind=data["kind"],
        value=data.get("value"),
        error=TaskError.from_dict(data["error"]) if data.get("error") else None,
        exc_names=tuple(data.get("exc_names") or ()),
        retry=dict(data.get("retry") or {}),
        retryable=bool(data.get("retryable", True)),
    )
