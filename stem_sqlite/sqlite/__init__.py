"""The SQLite engine: a broker and a result backend, each in its own file."""

from .backend import SqliteResultBackend
from .broker import SqliteBroker
from .consumer import SqliteConsumer

__all__ = ["SqliteBroker", "SqliteConsumer", "SqliteResultBackend"]
