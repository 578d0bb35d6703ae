"""What every tool does before its command: paths, versions, the default app."""

from __future__ import annotations

import sys
from typing import Any

import typer

from stem_sqlite import Stem, __version__
from stem_sqlite.paths import DatabasePaths
from stem_sqlite.sqlite.files import preflight
from stem_sqlite.sqlite.schema import BACKEND, BROKER

#: The app a frozen bundle runs when no --app is given (the bundled example).
BUNDLED_APP = "task_context_mixed.tasks"


def default_app_spec() -> str | None:
    return BUNDLED_APP if getattr(sys, "frozen", False) else None


def version_callback(value: bool | None) -> None:
    if value:
        print(f"stem-sqlite {__version__} (Python {sys.version.split()[0]})")
        raise typer.Exit(0)


def bind_paths(
    app: Stem,
    broker: str | None,
    backend: str | None,
    *,
    broker_options: dict[str, Any] | None = None,
    backend_options: dict[str, Any] | None = None,
    need_backend: bool = True,
) -> DatabasePaths:
    """Resolve the paths (flags, then the environment), refuse bad ones before any file
    is created, and bind them to the app so that nothing opens anywhere else."""
    if broker is None and backend is None and app.is_configured:
        # The app bound its own paths (app.configure in its module): keep them.
        paths = app.configure(
            broker_path=app.paths.broker,
            backend_path=app.paths.backend,
            broker_options=broker_options,
            backend_options=backend_options,
        )
    else:
        paths = app.configure(
            broker_path=broker,
            backend_path=backend,
            broker_options=broker_options,
            backend_options=backend_options,
        )
    preflight(paths.broker, BROKER)
    if need_backend:
        preflight(paths.backend, BACKEND)
    return paths
