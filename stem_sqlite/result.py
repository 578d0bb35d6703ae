"""AsyncResult: the handle a producer gets back for one enqueued task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, TaskCancelled, TaskFailed
from .model import TaskState, TaskStatus
from .timeutil import Duration

if TYPE_CHECKING:
    from .app import Stem


class AsyncResult:
    """The state and result of one task, read from the app's result backend.

    Reading never writes: a producer can wait for results without becoming a
    writer of the backend file.
    """

    def __init__(self, id: str, app: Stem | None = None) -> None:
        self.id = id
        self._app = app

    def _backend(self) -> Any:
        if self._app is None:
            raise ConfigurationError(
                f"AsyncResult {self.id} has no app to read results from; "
                "create it as AsyncResult(id, app=app)"
            )
        return self._app.backend

    def status(self) -> TaskStatus | None:
        """The stored status, or None when no status exists (yet)."""
        return self._backend().get(self.id)  # type: ignore[no-any-return]

    @property
    def state(self) -> TaskState | None:
        """The task's state; None while nothing is known (Celery calls this PENDING)."""
        status = self.status()
        return status.state if status else None

    def ready(self) -> bool:
        """True once the task reached a terminal state (succeeded, failed, cancelled)."""
        status = self.status()
        return bool(status and status.state.is_terminal)

    def successful(self) -> bool:
        status = self.status()
        return bool(status and status.state is TaskState.SUCCEEDED)

    def wait(self, timeout: Duration | None = None) -> TaskStatus:
        """The terminal status; raises ``ResultTimeout`` when it does not come in time."""
        return self._backend().wait(self.id, timeout=timeout)  # type: ignore[no-any-return]

    def get(self, timeout: Duration | None = None) -> Any:
        """The task's return value. Raises ``TaskFailed`` (with ``.error``) if it failed,
        ``TaskCancelled`` if it was cancelled, ``ResultTimeout`` after ``timeout``."""
        status = self.wait(timeout)
        if status.state is TaskState.SUCCEEDED:
            return status.payload
        if status.state is TaskState.CANCELLED:
            raise TaskCancelled(self.id, status.error)
        raise TaskFailed(self.id, status.error)

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)
