"""Envelope ids: canonical UUIDv7 text, unique, and in creation order within a process."""

from __future__ import annotations

import uuid

from stem_sqlite.ids import derived_id, new_id


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


def test_a_derived_id_is_fixed_by_its_parts_and_is_a_uuid_of_version_8() -> None:
    """A follow-up's id: the same parent parts always give the same id."""
    first = derived_id("parent", "2026-12-05T00:00:00.000Z", "link", "0")
    assert first == derived_id("parent", "2026-12-05T00:00:00.000Z", "link", "0")
    assert first != derived_id("parent", "2026-12-05T00:00:00.000Z", "link", "1")
    assert first != derived_id("parent", "2026-12-05T00:00:00.001Z", "link", "0")
    # the separator keeps part boundaries: ("ab", "c") is not ("a", "bc")
    assert derived_id("ab", "c") != derived_id("a", "bc")
    parsed = uuid.UUID(first)
    assert (parsed.version, parsed.variant) == (8, uuid.RFC_4122)
    assert str(parsed) == first
