"""The errors stem-sqlite raises to its users.

Every error derives from :class:`StemError`. Errors about bad input also derive
from the built-in exception a Python user would expect (``ValueError`` for a bad
value, ``TypeError`` for a value that cannot be stored as JSON), so code written
against the standard library's conventions keeps working.
"""

from __future__ import annotations


class StemError(Exception):
    """Base class of every error stem-sqlite raises on purpose."""


class InvalidArgument(StemError, ValueError):
    """A value given to the library is out of range or malformed."""


class InvalidPayload(StemError, TypeError):
    """A payload, argument, header, meta or result is not a JSON value."""


class UnsupportedOperation(StemError):
    """The operation exists in the contract but this engine cannot do it."""


class ConfigurationError(StemError):
    """The set-up is wrong: paths, files or options that cannot work together."""


class StorageError(StemError):
    """A database file cannot be opened, read or written."""


class DatabaseBusy(StorageError):
    """Another process held the database's write lock for longer than the busy timeout."""


class NotAStemDatabase(StorageError):
    """The file exists but is not a SQLite database made by stem-sqlite for this role."""


class SchemaTooNew(StorageError):
    """The database was written by a newer stem-sqlite; this code will not touch it."""


class JobInFlight(StemError):
    """A job with this id is leased by a consumer; publishing it again would break the lease."""


class TaskNotRegistered(StemError, KeyError):
    """No task of this name is registered with the app."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class ResultTimeout(StemError, TimeoutError):
    """Waiting for a task's result took longer than the timeout."""
