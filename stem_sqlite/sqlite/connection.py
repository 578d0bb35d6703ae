"""Opening a database file: path checks, pragmas, migrations, and one shared connection.

Each process keeps one connection per database file, shared by every broker or
backend object opened on that file and guarded by a lock, so a process is never
its own competitor for SQLite's single write lock. Writes run in
``BEGIN IMMEDIATE`` transactions and wake every waiter in the process when they
commit; waiters also notice commits of other processes by the wal-index header
(``walindex.py``; ``PRAGMA data_version`` where it cannot be read), which is cheap
enough to check every few milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    ConfigurationError,
    NotAStemDatabase,
    SchemaTooNew,
    StemError,
    StorageError,
)
from .failures import is_busy as _is_busy
from .failures import translate_error, unstorable
from .files import prepare_path, same_file_error
from .schema import BACKEND, BROKER, ROLE_NAMES, Role
from .walindex import WalIndexHeader

BUSY_TIMEOUT_SECONDS = 5.0
SYNCHRONOUS_MODES = ("NORMAL", "FULL")


@dataclass(frozen=True)
class WriteResult:
    """What a single-statement write returned: its rows and how many rows it changed."""

    rows: list[Any]
    rowcount: int

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows


@dataclass(frozen=True)
class ChangeMark:
    """What a waiter has seen: the in-process commit count and the file's change token
    (the wal-index header's bytes, or SQLite's data_version)."""

    generation: int
    token: bytes | int


class Database:
    """One connection to one file, shared within the process. Use :func:`open_database`."""

    def __init__(self, path: Path, role: Role, conn: sqlite3.Connection) -> None:
        self.path = path
        self.role = role
        self._conn = conn
        self._lock = threading.RLock()
        self._changed = threading.Condition(threading.Lock())
        self._generation = 0
        self._users = 0
        self.closed = False
        #: In-process listeners by topic (e.g. a task id), for pushes that must not
        #: be lost between two polls; shared by every object opened on this file.
        self.listeners: dict[str, set[Any]] = {}
        self.listeners_lock = threading.Lock()
        self._wal_index = WalIndexHeader(path)

    # -- access ----------

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for statements that only read."""
        with self._lock:
            self._check_open()
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise translate_error(exc, self.path, self.role) from exc
            except (UnicodeEncodeError, OverflowError) as exc:
                raise unstorable(exc) from None

    def write_one(self, sql: str, params: object = ()) -> WriteResult:
        """Run one writing statement as its own transaction (autocommit).

        A single statement takes SQLite's write lock before it reads anything, so
        it is as atomic as ``BEGIN IMMEDIATE`` and costs one round trip instead of three.
        Every row it returns is read before the connection is let go: a statement with
        ``RETURNING`` commits only once it has been stepped to its end.
        """
        with self._lock:
            self._check_open()
            try:
                cursor = self._conn.execute(sql, params)  # type: ignore[arg-type]
                result = WriteResult(cursor.fetchall(), cursor.rowcount)
            except sqlite3.Error as exc:
                raise translate_error(exc, self.path, self.role) from exc
            except (UnicodeEncodeError, OverflowError) as exc:
                raise unstorable(exc) from None
        if result.rowcount > 0:  # an empty claim must not wake the waiters (a busy loop)
            self.notify_change()
        return result

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error.

        Every waiter in the process is woken after the commit.
        """
        with self._lock:
            self._check_open()
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise translate_error(exc, self.path, self.role) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise translate_error(exc, self.path, self.role) from exc
                if isinstance(exc, (UnicodeEncodeError, OverflowError)):
                    raise unstorable(exc) from None
                raise
        self.notify_change()

    def _check_open(self) -> None:
        if self.closed:
            raise StemError(f"the {self.role.name} database {self.path} is closed")

    # -- change notification ----------

    def notify_change(self) -> None:
        """Wake every thread of this process that waits for a change of this file."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def mark(self) -> ChangeMark:
        """What has been seen so far; take it *before* reading, then wait on it."""
        with self._changed:
            generation = self._generation
        return ChangeMark(generation, self.change_token())

    def change_token(self) -> bytes | int:
        """Something that changes with every commit to the file, by any process."""
        header = self._wal_index.snapshot()
        return header if header is not None else self.data_version()

    def data_version(self) -> int:
        with self.read() as conn:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def wait_for_change(self, mark: ChangeMark, timeout: float, check_every: float) -> bool:
        """Block until this file changes after ``mark`` or ``timeout`` passes.

        A commit in this process wakes the waiter at once; a commit by another
        process is noticed within ``check_every`` seconds. Returns True on a change.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            with self._changed:
                if self._generation != mark.generation:
                    return True
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, check_every))
                if self._generation != mark.generation:
                    return True
            if self.closed:
                return False
            if self.change_token() != mark.token:
                return True

    # -- life cycle ----------

    def _retain(self) -> None:
        self._users += 1

    def _release(self) -> bool:
        self._users -= 1
        return self._users <= 0

    def _close_connection(self) -> None:
        with self._lock:
            self.closed = True
            self._conn.close()
            self._wal_index.close()
        self.notify_change()


# The one piece of process-wide state: which files this process has open, so that
# every broker or backend object on one file shares one connection (one writer
# per file per process). A forked child must not use its parent's connections,
# so it starts with an empty registry.
_registry: dict[str, Database] = {}
_registry_lock = threading.Lock()


def _forget_inherited_connections() -> None:
    global _registry_lock
    _registry.clear()
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_inherited_connections)


def open_database(
    path: str | os.PathLike[str], role: Role, *, synchronous: str = "NORMAL"
) -> Database:
    """Open (creating and migrating when needed) the file at ``path`` for ``role``.

    Creates missing parent folders, creates the file readable and writable by its
    owner only, switches it to WAL, and applies pending migrations in one
    ``BEGIN IMMEDIATE`` transaction, which is safe when several processes open a
    new file at the same moment. The returned object is shared by every opener of
    the same file in this process; call :func:`release_database` once per open.
    """
    sync = synchronous.upper() if isinstance(synchronous, str) else synchronous
    if sync not in SYNCHRONOUS_MODES:
        raise ConfigurationError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
    resolved = prepare_path(path, role)
    key = os.path.realpath(resolved)
    with _registry_lock:
        existing = _registry.get(key)
        if existing is not None and not existing.closed:
            if existing.role is not role:
                raise same_file_error(resolved)
            if sync == "FULL":  # the stronger setting wins for the shared connection
                with existing.read() as conn:
                    conn.execute("PRAGMA synchronous = FULL")
            existing._retain()
            return existing
        conn = _connect(resolved, role, sync)
        db = Database(resolved, role, conn)
        db._retain()
        _registry[key] = db
        return db


def release_database(db: Database) -> None:
    """Give back one open of ``db``; the connection closes with the last one."""
    with _registry_lock:
        if db.closed:
            return
        if db._release():
            key = os.path.realpath(db.path)
            if _registry.get(key) is db:
                del _registry[key]
            db._close_connection()


def _connect(path: Path, role: Role, synchronous: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=512,
        )
    except sqlite3.Error as exc:
        raise translate_error(exc, path, role) from exc
    try:
        _check_identity(conn, path, role)
        _retry_busy(lambda: _enable_wal(conn, path))
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # A deep queue keeps the top of its indexes hot only with more than the default
        # 2 MB of page cache; the cache grows only as pages are used.
        conn.execute("PRAGMA cache_size = -32000")
        # A current file is only read: readers (stem-enqueue --wait, stem health)
        # never take the write lock just by opening it.
        if not _is_current(conn, role):
            _retry_busy(lambda: _migrate(conn, path, role))
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise translate_error(exc, path, role) from exc
        raise
    return conn


def _check_identity(conn: sqlite3.Connection, path: Path, role: Role) -> None:
    """Refuse a file that is not SQLite, is the other role's file, or is newer than this code."""
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise
        raise NotAStemDatabase(
            f"{path} is not a SQLite database ({exc}); give the {role.name} a new file path "
            f"(set {role.env_hint}) or move that file away"
        ) from None
    if app_id == role.application_id:
        if version > len(role.migrations):
            raise SchemaTooNew(
                f"{path} has schema version {version}, but this stem-sqlite knows only up to "
                f"{len(role.migrations)}; upgrade stem-sqlite (the file was left untouched)"
            )
        return
    if app_id in ROLE_NAMES and (role is BROKER or role is BACKEND):
        raise same_file_error(path)
    if app_id != 0 or (tables and not all(t.startswith("stem_") for t in tables)):
        raise NotAStemDatabase(
            f"{path} is a SQLite database of another application; stem-sqlite will not add "
            f"tables to it. Give the {role.name} its own file (set {role.env_hint})"
        )


def _is_current(conn: sqlite3.Connection, role: Role) -> bool:
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    return app_id == role.application_id and version == len(role.migrations)


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(
            f"{path} cannot use write-ahead logging (journal mode stayed {mode!r}); "
            "keep the database on a local disk, not a network share"
        )


def _migrate(conn: sqlite3.Connection, path: Path, role: Role) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated first.
        _check_identity(conn, path, role)
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for number, statements in enumerate(role.migrations, start=1):
            if number <= version:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute(f"PRAGMA application_id = {role.application_id}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _retry_busy(action: object, attempts: int = 20) -> None:
    """Run ``action``; retry while another process holds the lock (new files opened at once)."""
    assert callable(action)
    for attempt in range(attempts):
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
