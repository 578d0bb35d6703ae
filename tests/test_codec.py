"""JSON encoding of stored values: what cannot be stored is refused with a sentence that
names where it is, before anything is written."""

from __future__ import annotations

import pytest

from stem_sqlite.codec import dumps
from stem_sqlite.errors import InvalidPayload


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("a \ud800 b", "result"),
        ({"rows": [1, {"name": "x\udfff"}]}, "result['rows'][1]['name']"),
        ({"k\ud800": 1}, "a key of result"),
    ],
)
def test_a_lone_surrogate_is_refused_and_located(value: object, where: str) -> None:
    """JSON's encoder lets a lone surrogate through; SQLite (UTF-8) cannot store it."""
    with pytest.raises(InvalidPayload, match="lone surrogate") as caught:
        dumps(value, where="result")
    assert str(caught.value).startswith(where)


def test_proper_unicode_is_kept_as_it_is() -> None:
    assert dumps({"name": "Zoë 日本 😀"}, where="result") == '{"name":"Zoë 日本 😀"}'
