"""Envelope ids: canonical UUIDv7 text, unique, and in creation order within a process."""

from __future__ import annotations

import uuid

from stem_sqlite.ids import new_id


def test_ids_are_canonical_uuid7_text() -> None:
    for _ in range(2000):
        text = new_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_ids_are_unique_and_sort_in_creation_order() -> None:
    ids = [new_id() for _ in range(20000)]  # many fall within one millisecond
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_ids_made_in_bulk_are_like_single_ones() -> None:
    from stem_sqlite.ids import new_ids

    before = new_id()
    bulk = new_ids(5000)
    after = new_id()
    assert len(set(bulk)) == 5000
    assert [before, *bulk, after] == sorted([before, *bulk, after])
    for text in bulk[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert new_ids(0) == []
