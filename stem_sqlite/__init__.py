"""stem-sqlite: Celery-style background tasks on SQLite, with no infrastructure."""

from .contracts import Broker, Consumer, ResultBackend
from .errors import (
    ConfigurationError,
    DatabaseBusy,
    InvalidArgument,
    InvalidPayload,
    JobInFlight,
    NotAStemDatabase,
    ResultTimeout,
    SchemaTooNew,
    StemError,
    StorageError,
    TaskNotRegistered,
    UnsupportedOperation,
)
from .model import (
    DeadLetterEntry,
    DeadLetterPage,
    Delivery,
    Envelope,
    GroupDescriptor,
    GroupStatus,
    ReplayResult,
    TaskError,
    TaskState,
    TaskStatus,
    TaskStatusPage,
    TaskStatusRecord,
    WorkerHeartbeat,
)
from .paths import DatabasePaths, resolve_paths
from .sqlite import SqliteBroker, SqliteResultBackend

__version__ = "0.1.0"

__all__ = [
    "Broker",
    "ConfigurationError",
    "Consumer",
    "DatabaseBusy",
    "DatabasePaths",
    "DeadLetterEntry",
    "DeadLetterPage",
    "Delivery",
    "Envelope",
    "GroupDescriptor",
    "GroupStatus",
    "InvalidArgument",
    "InvalidPayload",
    "JobInFlight",
    "NotAStemDatabase",
    "ReplayResult",
    "ResultBackend",
    "ResultTimeout",
    "SchemaTooNew",
    "SqliteBroker",
    "SqliteResultBackend",
    "StemError",
    "StorageError",
    "TaskError",
    "TaskNotRegistered",
    "TaskState",
    "TaskStatus",
    "TaskStatusPage",
    "TaskStatusRecord",
    "UnsupportedOperation",
    "WorkerHeartbeat",
    "__version__",
    "resolve_paths",
]
