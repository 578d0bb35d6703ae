"""Turning sqlite3 errors into StemErrors that name the file and say what to do."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import (
    DatabaseBusy,
    InvalidArgument,
    InvalidPayload,
    NotAStemDatabase,
    StemError,
    StorageError,
)
from .schema import Role


def is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def unstorable(exc: Exception) -> StemError:
    """A value SQLite cannot bind: text with lone surrogates, or an integer past 64 bits."""
    if isinstance(exc, UnicodeEncodeError):
        return InvalidPayload(
            "a value contains text that is not valid Unicode (a lone surrogate such as "
            f"{exc.object[exc.start : exc.end]!r}); pass proper UTF-8 text"
        )
    return InvalidArgument(f"a number is too large to store ({exc}); SQLite integers are 64-bit")


def translate_error(exc: sqlite3.Error, path: Path, role: Role) -> StemError:
    """Turn a sqlite3 error into a StemError that names the file and what to do."""
    text = str(exc)
    lowered = text.lower()
    if is_busy(exc):
        return DatabaseBusy(
            f"the {role.name} database {path} stayed locked by another process for more than "
            f"the busy timeout ({text}); retry, or stop the process that holds it"
        )
    if "disk is full" in lowered or "database or disk is full" in lowered:
        return StorageError(
            f"the disk holding the {role.name} database {path} is full ({text}); free space and "
            "retry (nothing was written by the failed call)"
        )
    if "not a database" in lowered or "malformed" in lowered:
        return NotAStemDatabase(
            f"{path} is not a usable SQLite database ({text}); give the {role.name} a new file"
        )
    if "disk i/o error" in lowered:
        return StorageError(
            f"writing the {role.name} database {path} failed ({text}): the disk is full, a "
            "file-size limit (ulimit -f) was reached, or the device failed; free space or "
            "raise the limit and retry"
        )
    if "readonly" in lowered or "read-only" in lowered:
        return StorageError(
            f"the {role.name} database {path} is read-only ({text}); fix its permissions"
        )
    if "unable to open" in lowered:
        return StorageError(
            f"cannot open the {role.name} database {path} ({text}); check that the folder "
            "exists and is writable"
        )
    return StorageError(f"{role.name} database {path}: {text}")
