"""Checking and creating database file paths, before any connection is opened."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigurationError, NotAStemDatabase, StorageError
from .schema import Role


def same_file_error(path: Path) -> ConfigurationError:
    return ConfigurationError(
        f"{path} cannot be both the broker and the result backend: SQLite allows one writer "
        "per file, and workers would block producers on every result they store. "
        "Use two files, e.g. stem_broker.sqlite and stem_backend.sqlite "
        "(STEM_SQLITE_BROKER_PATH and STEM_SQLITE_BACKEND_PATH)"
    )


SQLITE_HEADER = b"SQLite format 3\x00"


def preflight(path: str | os.PathLike[str], role: Role) -> Path:
    """Check, without creating or changing anything, that ``path`` can hold ``role``.

    Lets a tool refuse a bad second path before it creates the first file.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ConfigurationError(
            f"the {role.name} path must be a file path, got {path!r}; set {role.env_hint}"
        )
    resolved = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if resolved.is_dir():
        raise StorageError(
            f"the {role.name} path {resolved} is a folder; give a file path inside it, "
            f"e.g. {resolved / 'stem.sqlite'}"
        )
    if resolved.exists():
        if not os.access(resolved, os.R_OK | os.W_OK):
            raise StorageError(
                f"the {role.name} database {resolved} is not readable and writable by this "
                "user; fix its permissions or choose another path"
            )
        with open(resolved, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
        if header and header != SQLITE_HEADER:
            raise NotAStemDatabase(
                f"{resolved} is not a SQLite database; give the {role.name} a new file path "
                f"(set {role.env_hint}) or move that file away"
            )
        return resolved
    ancestor = resolved.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise StorageError(
            f"cannot create the {role.name} database {resolved}: {ancestor} is not a writable "
            f"folder; choose a writable location (set {role.env_hint})"
        )
    return resolved


def prepare_path(path: str | os.PathLike[str], role: Role) -> Path:
    """Check the path, create its folder and (owner-only) the file; return it absolute."""
    resolved = preflight(path, role)
    try:
        resolved.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the folder {resolved.parent} for the {role.name} database: "
            f"{exc.strerror or exc}; choose a writable location (set {role.env_hint})"
        ) from None
    try:
        fd = os.open(resolved, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        return resolved
    except OSError as exc:
        raise StorageError(
            f"cannot create the {role.name} database {resolved}: {exc.strerror or exc}; "
            f"choose a writable location (set {role.env_hint})"
        ) from None
    if not os.access(resolved, os.R_OK | os.W_OK):
        # A strict umask (e.g. 0277) made a file we could not use: leave nothing behind.
        resolved.unlink(missing_ok=True)
        mask = os.umask(0)
        os.umask(mask)
        raise StorageError(
            f"the {role.name} database {resolved} would not be readable and writable by this "
            f"user under the umask {mask:04o}; use a umask that keeps owner read and write "
            "(e.g. 077)"
        )
    return resolved
