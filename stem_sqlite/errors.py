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


class TaskFailed(StemError):
    """Raised by ``AsyncResult.get()`` when the task failed; ``.error`` holds its TaskError."""

    def __init__(self, task_id: str, error: object) -> None:
        self.task_id = task_id
        self.error = error
        kind = getattr(error, "type", "Error")
        message = getattr(error, "message", "")
        super().__init__(f"task {task_id} failed: {kind}: {message}")


class TaskCancelled(TaskFailed):
    """Raised by ``AsyncResult.get()`` when the task was cancelled (e.g. it expired)."""


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its soft time limit passes, so it can clean up."""


class TimeLimitExceeded(Exception):
    """The task ran past its hard time limit and was stopped."""


class TaskRevoked(Exception):
    """Raised inside a task that the worker asked to stop (soft shutdown)."""


class Retry(Exception):
    """Raised by ``ctx.retry()``: ends this attempt and schedules another one."""

    def __init__(
        self,
        *,
        countdown: float | None = None,
        eta: object = None,
        retry_policy: object = None,
        max_retries: int | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        exc: BaseException | None = None,
    ) -> None:
        self.countdown = countdown
        self.eta = eta
        self.retry_policy = retry_policy
        self.max_retries = max_retries
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit
        self.exc = exc
        super().__init__("retry requested" + (f" after {exc!r}" if exc else ""))
