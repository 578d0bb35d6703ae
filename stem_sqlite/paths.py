"""Where the broker and backend files are: flags first, then the environment.

The rules (the same as the original's example, generalised by a base name):

1. ``STEM_SQLITE_BROKER_PATH`` / ``STEM_SQLITE_BACKEND_PATH``: if either is set
   (non-blank), each one that is not set defaults to ``<base>_broker.sqlite`` /
   ``<base>_backend.sqlite`` in the working folder, and ``STEM_SQLITE_PATH`` is ignored.
2. Otherwise ``STEM_SQLITE_PATH`` is a prefix: ``data/app.db`` gives
   ``data/app_broker.sqlite`` and ``data/app_backend.sqlite``; a folder written with
   a trailing separator gives ``<folder>/<base>_broker.sqlite``.
3. With nothing set: ``<base>_broker.sqlite`` and ``<base>_backend.sqlite``.

``base`` is ``stem``; the ``task_context_mixed`` example passes its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError

BROKER_ENV = "STEM_SQLITE_BROKER_PATH"
BACKEND_ENV = "STEM_SQLITE_BACKEND_PATH"
BASE_ENV = "STEM_SQLITE_PATH"


@dataclass(frozen=True)
class DatabasePaths:
    """The two files of one deployment. They are never the same file."""

    broker: Path
    backend: Path


def _set(value: str | os.PathLike[str] | None) -> str | None:
    if value is None:
        return None
    text = os.fspath(value)
    return text.strip() if text.strip() else None


def prefix_from_base(base: str, default_base: str) -> str:
    """The file-name prefix of ``STEM_SQLITE_PATH``: its extension dropped, or
    ``default_base`` added when it names a folder (trailing separator)."""
    separators = {os.sep} | ({os.altsep} if os.altsep else set())
    if base[-1:] in separators:
        return base + default_base
    folder, name = os.path.split(base)
    dot = name.rfind(".")
    if dot > 0:
        return os.path.join(folder, name[:dot]) if folder else name[:dot]
    return base


def resolve_paths(
    env: Mapping[str, str] | None = None,
    *,
    broker: str | os.PathLike[str] | None = None,
    backend: str | os.PathLike[str] | None = None,
    default_base: str = "stem",
) -> DatabasePaths:
    """Resolve the broker and backend paths; explicit arguments beat the environment.

    Relative paths stay relative to the working folder of the caller. Raises
    :class:`ConfigurationError` when both resolve to the same file.
    """
    environ = os.environ if env is None else env
    broker_path = _set(broker)
    backend_path = _set(backend)
    env_broker = _set(environ.get(BROKER_ENV))
    env_backend = _set(environ.get(BACKEND_ENV))
    if env_broker or env_backend:
        broker_path = broker_path or env_broker or f"{default_base}_broker.sqlite"
        backend_path = backend_path or env_backend or f"{default_base}_backend.sqlite"
    else:
        raw_base = environ.get(BASE_ENV)
        base = raw_base if raw_base and raw_base.strip() else default_base
        prefix = prefix_from_base(base, default_base)
        broker_path = broker_path or f"{prefix}_broker.sqlite"
        backend_path = backend_path or f"{prefix}_backend.sqlite"
    paths = DatabasePaths(Path(broker_path), Path(backend_path))
    if os.path.abspath(paths.broker) == os.path.abspath(paths.backend):
        raise ConfigurationError(
            f"the broker and the result backend both resolve to {paths.broker}; SQLite allows "
            f"one writer per file, so give them separate files ({BROKER_ENV} and {BACKEND_ENV}, "
            "or --broker and --backend)"
        )
    return paths
