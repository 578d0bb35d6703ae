"""Turning stored rows back into model objects, tolerating rows that were damaged."""

from __future__ import annotations

import json
from typing import Any

from ..model import DeadLetterEntry, Delivery, Envelope
from ..timeutil import from_ms


def decode_envelope(text: str) -> Envelope:
    """Decode a stored envelope; raises ``ValueError``/``KeyError``/``TypeError`` if damaged."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("stored envelope is not a JSON object")
    return Envelope.from_dict(data)


def salvage_envelope(job_id: str, queue: str, text: str) -> Envelope:
    """Best-effort envelope for a damaged row, so it can still be listed and inspected."""
    try:
        return decode_envelope(text)
    except Exception:  # noqa: BLE001 - any damage at all gets the same fallback
        pass
    name = "unknown"
    try:
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("name"), str) and data["name"].strip():
            name = data["name"]
    except Exception:  # noqa: BLE001
        pass
    return Envelope(name=name, id=job_id, queue=queue, meta={"stem.rawEnvelope": text[:2000]})


def dead_letter_from_row(row: tuple[Any, ...]) -> DeadLetterEntry:
    job_id, queue, envelope_text, reason, meta_text, dead_at = row
    try:
        meta = json.loads(meta_text) if meta_text else {}
    except ValueError:
        meta = {}
    return DeadLetterEntry(
        envelope=salvage_envelope(job_id, queue, envelope_text),
        reason=reason,
        meta=meta if isinstance(meta, dict) else {},
        dead_at=from_ms(dead_at),
    )


def texts_of_copies(template_id: str, text: str, ids: list[str]) -> list[str]:
    """The stored text of a copy of an envelope (``text``, whose id is ``template_id``)
    for each id, without encoding it again: the id is the first field of an envelope's
    JSON, so a copy differs only there."""
    head = '{"id":' + json.dumps(template_id, ensure_ascii=False)
    if not text.startswith(head):  # pragma: no cover - to_dict always starts with the id
        raise AssertionError("an envelope's JSON must start with its id")
    rest = text[len(head) :]
    return ['{"id":"' + copy_id + '"' + rest for copy_id in ids]


def deliveries_of_claim(
    rows: list[Any], token: str, now: int, queue: str
) -> tuple[list[Delivery], list[tuple[str, str, str]]]:
    """The deliveries of the rows a claim returned (``rowid, id, priority, visible_at,
    delivery_count, envelope``), in claim order, and the rows that cannot be decoded as
    ``(job id, receipt, problem)``."""
    rows.sort(key=lambda row: (-row[2], row[0]))
    deliveries: list[Delivery] = []
    damaged: list[tuple[str, str, str]] = []
    for _rowid, job_id, _priority, visible_at, delivery_count, text in rows:
        receipt = f"{token}:{job_id}"
        try:
            envelope = decode_envelope(text)
        except Exception as exc:  # noqa: BLE001 - any damage is dead-lettered the same way
            damaged.append((job_id, receipt, f"{type(exc).__name__}: {exc}"))
            continue
        lease = (visible_at - now) / 1000
        deliveries.append(
            Delivery(envelope, receipt, from_ms(visible_at), queue, delivery_count, lease)
        )
    return deliveries, damaged
