"""JSON encoding of everything stored: strict, compact, and with errors that name the key.

stem-sqlite stores only JSON. Nothing is pickled, so a database written by one
version or one language can be read by another, and stored data can never make a
process run code.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import InvalidPayload

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode_json(value: Any) -> str:
    """Compact JSON text of a value whose keys are known to be text (see
    :func:`keys_are_text`); raises TypeError/ValueError for what is not JSON."""
    return _ENCODER.encode(value)


def dumps(value: Any, *, where: str) -> str:
    """Encode ``value`` as compact JSON text.

    ``where`` names the value in the error (``"kwargs"``, ``"result of demo.add"``).
    Raises ``InvalidPayload`` (a ``TypeError``) naming the first offending key when
    the value is not JSON: an object of another type, a non-string key, NaN or infinity.
    """
    try:
        if keys_are_text(value):
            text = _ENCODER.encode(value)
            if not text.isascii():
                text.encode("utf-8")  # a lone surrogate passes the encoder, not SQLite
            return text
    except (TypeError, ValueError, RecursionError):
        pass
    problem = find_non_json(value, where)
    raise InvalidPayload(problem or f"{where} is not a JSON value") from None


def keys_are_text(value: Any, depth: int = 0) -> bool:
    """JSON's encoder turns 1 or True keys into text silently (and can merge two keys):
    such data would not come back as it went in, so it is refused instead."""
    if depth > 200:
        return False
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return False
            if isinstance(item, (dict, list, tuple)) and not keys_are_text(item, depth + 1):
                return False
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, (dict, list, tuple)) and not keys_are_text(item, depth + 1):
                return False
    return True


def loads(text: str | bytes | None) -> Any:
    """Decode JSON text written by :func:`dumps`; ``None`` stays ``None``."""
    if text is None:
        return None
    return json.loads(text)


def find_non_json(value: Any, path: str, _depth: int = 0) -> str | None:
    """Return a sentence naming the first part of ``value`` that JSON cannot hold, or None."""
    if _depth > 200:
        return f"{path} is nested too deeply (or refers to itself) to be stored as JSON"
    if isinstance(value, str):
        return _lone_surrogate(value, path)
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return f"{path} is {value!r}, which JSON cannot represent; use null or a string"
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = find_non_json(item, f"{path}[{index}]", _depth + 1)
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (
                    f"{path} has the key {key!r} ({type(key).__name__}); "
                    "JSON object keys must be strings"
                )
            bad_key = _lone_surrogate(key, f"a key of {path}")
            if bad_key:
                return bad_key
            found = find_non_json(item, f"{path}[{key!r}]", _depth + 1)
            if found:
                return found
        return None
    return (
        f"{path} is {type(value).__name__} ({_short_repr(value)}), which is not a JSON value; "
        "pass str, int, float, bool, None, list or dict (convert it first, e.g. a datetime "
        "to an ISO string)"
    )


def _lone_surrogate(text: str, path: str) -> str | None:
    """A sentence naming a lone surrogate in ``text`` (it has no UTF-8 form), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"{path} holds a lone surrogate ({exc.object[exc.start : exc.end]!r}), which is "
            "not text that can be stored; pass proper Unicode (decode bytes as UTF-8 first)"
        )
    return None


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_json(value: Any, *, where: str) -> None:
    """Raise ``InvalidPayload`` naming the offending key when ``value`` is not JSON."""
    dumps(value, where=where)
