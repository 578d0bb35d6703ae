"""stem-sqlite: Celery-style background tasks on SQLite, with no infrastructure."""

from .app import Stem, Task
from .canvas import GroupResult, chain, chord, group
from .context import TaskContext
from .contracts import Broker, Consumer, ResultBackend
from .errors import (
    ConfigurationError,
    DatabaseBusy,
    InvalidArgument,
    InvalidPayload,
    JobInFlight,
    NotAStemDatabase,
    ResultTimeout,
    Retry,
    SchemaTooNew,
    SoftTimeLimitExceeded,
    StemError,
    StorageError,
    TaskCancelled,
    TaskFailed,
    TaskNotRegistered,
    TaskRevoked,
    TimeLimitExceeded,
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
    StatusWrite,
    TaskError,
    TaskState,
    TaskStatus,
    TaskStatusPage,
    TaskStatusRecord,
    WorkerHeartbeat,
)
from .options import EnqueueOptions, RetryPolicy
from .paths import DatabasePaths, resolve_paths
from .result import AsyncResult
from .signature import Signature
from .sqlite import SqliteBroker, SqliteResultBackend
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "GroupResult",
    "chain",
    "chord",
    "group",
    "AsyncResult",
    "EnqueueOptions",
    "Retry",
    "RetryPolicy",
    "Signature",
    "SoftTimeLimitExceeded",
    "Stem",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskRevoked",
    "TimeLimitExceeded",
    "Worker",
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
    "StatusWrite",
    "TaskStatus",
    "TaskStatusPage",
    "TaskStatusRecord",
    "UnsupportedOperation",
    "WorkerHeartbeat",
    "__version__",
    "resolve_paths",
]
