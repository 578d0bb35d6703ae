"""Diagnostic tasks registered on every app, so a bare worker can be tried at once:
``stem-enqueue stem.echo hello --wait`` against ``stem-worker --queue default``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .timeutil import to_seconds

if TYPE_CHECKING:
    from .app import Stem


def echo(*args: Any, **kwargs: Any) -> Any:
    """Return the arguments: a list of the positional ones, or a dict when keywords are given."""
    if kwargs:
        return {"args": list(args), "kwargs": kwargs}
    return list(args)


def sleep(seconds: float = 1.0) -> float:
    """Sleep ``seconds`` and return them."""
    time.sleep(to_seconds(seconds, name="seconds"))
    return seconds


def register_builtins(app: Stem) -> None:
    app.task(name="stem.echo")(echo)
    app.task(name="stem.sleep")(sleep)
