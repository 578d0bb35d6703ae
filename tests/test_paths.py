"""Where the broker and backend files are: api.md section 8 and stem_sqlite.paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from stem_sqlite import ConfigurationError, DatabasePaths, resolve_paths

BROKER = "STEM_SQLITE_BROKER_PATH"
BACKEND = "STEM_SQLITE_BACKEND_PATH"
BASE = "STEM_SQLITE_PATH"


def pair(broker: str, backend: str) -> DatabasePaths:
    return DatabasePaths(Path(broker), Path(backend))


def test_nothing_set_gives_the_default_files() -> None:
    assert resolve_paths({}) == pair("stem_broker.sqlite", "stem_backend.sqlite")


def test_broker_env_alone_defaults_the_backend() -> None:
    env = {BROKER: "q/jobs.db"}
    assert resolve_paths(env) == pair("q/jobs.db", "stem_backend.sqlite")


def test_backend_env_alone_defaults_the_broker() -> None:
    env = {BACKEND: "r/results.db"}
    assert resolve_paths(env) == pair("stem_broker.sqlite", "r/results.db")


def test_role_env_vars_win_over_the_base() -> None:
    env = {BROKER: "jobs.db", BACKEND: "results.db", BASE: "data/app.db"}
    assert resolve_paths(env) == pair("jobs.db", "results.db")
    env = {BROKER: "jobs.db", BASE: "data/app.db"}
    assert resolve_paths(env) == pair("jobs.db", "stem_backend.sqlite")


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_values_count_as_unset(blank: str) -> None:
    env = {BROKER: blank, BACKEND: blank, BASE: "data/app.db"}
    assert resolve_paths(env) == pair("data/app_broker.sqlite", "data/app_backend.sqlite")
    env = {BROKER: blank, BACKEND: blank, BASE: blank}
    assert resolve_paths(env) == pair("stem_broker.sqlite", "stem_backend.sqlite")
    env = {BROKER: blank, BACKEND: "results.db"}
    assert resolve_paths(env) == pair("stem_broker.sqlite", "results.db")


@pytest.mark.parametrize(
    ("base", "broker", "backend"),
    [
        ("data/app.db", "data/app_broker.sqlite", "data/app_backend.sqlite"),
        ("app.db", "app_broker.sqlite", "app_backend.sqlite"),
        ("data/app", "data/app_broker.sqlite", "data/app_backend.sqlite"),
        ("data/", "data/stem_broker.sqlite", "data/stem_backend.sqlite"),
        ("/srv/stem/", "/srv/stem/stem_broker.sqlite", "/srv/stem/stem_backend.sqlite"),
        ("a.b.c", "a.b_broker.sqlite", "a.b_backend.sqlite"),
        ("x/a.b.c", "x/a.b_broker.sqlite", "x/a.b_backend.sqlite"),
        (".hidden", ".hidden_broker.sqlite", ".hidden_backend.sqlite"),
        ("x/.hidden", "x/.hidden_broker.sqlite", "x/.hidden_backend.sqlite"),
    ],
)
def test_base_path_gives_both_files(base: str, broker: str, backend: str) -> None:
    assert resolve_paths({BASE: base}) == pair(broker, backend)


def test_default_base_of_the_task_context_mixed_example() -> None:
    base = "task_context_mixed"
    assert resolve_paths({}, default_base=base) == pair(
        "task_context_mixed_broker.sqlite", "task_context_mixed_backend.sqlite"
    )
    assert resolve_paths({BASE: "data/"}, default_base=base) == pair(
        "data/task_context_mixed_broker.sqlite", "data/task_context_mixed_backend.sqlite"
    )
    assert resolve_paths({BROKER: "jobs.db"}, default_base=base) == pair(
        "jobs.db", "task_context_mixed_backend.sqlite"
    )


def test_explicit_arguments_beat_the_environment() -> None:
    env = {BROKER: "env_jobs.db", BACKEND: "env_results.db", BASE: "data/app.db"}
    assert resolve_paths(env, broker="cli_jobs.db") == pair("cli_jobs.db", "env_results.db")
    assert resolve_paths(env, backend=Path("cli_results.db")) == pair(
        "env_jobs.db", "cli_results.db"
    )
    assert resolve_paths(env, broker="b.db", backend="r.db") == pair("b.db", "r.db")
    assert resolve_paths({BASE: "data/app.db"}, broker="b.db") == pair(
        "b.db", "data/app_backend.sqlite"
    )


def test_environment_is_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BROKER, raising=False)
    monkeypatch.delenv(BACKEND, raising=False)
    monkeypatch.setenv(BASE, "data/app.db")
    assert resolve_paths() == pair("data/app_broker.sqlite", "data/app_backend.sqlite")


@pytest.mark.parametrize(
    ("env", "kwargs"),
    [
        ({BROKER: "same.sqlite", BACKEND: "same.sqlite"}, {}),
        ({BROKER: "same.sqlite", BACKEND: "./same.sqlite"}, {}),
        ({BACKEND: "same.sqlite"}, {"broker": "same.sqlite"}),
        ({}, {"broker": "same.sqlite", "backend": "same.sqlite"}),
    ],
)
def test_same_file_for_both_is_refused_with_the_reason(
    env: dict[str, str], kwargs: dict[str, str]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve_paths(env, **kwargs)
    message = str(caught.value)
    assert "same.sqlite" in message
    assert "broker" in message and "backend" in message
    assert "one writer" in message  # the reason, not just the fact
