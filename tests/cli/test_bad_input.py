"""Bad input (issue 4 item 6): one line on stderr that names the problem, exit code 2, no
traceback unless --debug, and no file created or changed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.cli.conftest import Cli, snapshot


@dataclass(frozen=True)
class Case:
    tool: str
    args: tuple[str, ...]
    names: tuple[str, ...]  # what the one line must mention
    setup: Callable[[Cli], None] = field(default=lambda cli: None)


def folder(cli: Cli) -> None:
    (cli.work / "dbdir").mkdir()


def not_sqlite(cli: Cli) -> None:
    cli.write("notes.txt", "these are my notes, not a database\n")


def under_a_file(cli: Cli) -> None:
    cli.write("plain", "a regular file where a folder would have to be\n")


def syntax_error(cli: Cli) -> None:
    cli.write("bad_syntax.py", "from stem_sqlite import Stem\napp = Stem(\ndef broken(:\n")


def third_party(cli: Cli) -> None:
    cli.write(
        "needs_dep.py",
        "import nosuchthirdpartypkg\nfrom stem_sqlite import Stem\napp = Stem()\n",
    )


CASES = {
    # unknown options
    "worker unknown option": Case("stem-worker", ("--bogus",), ("--bogus",)),
    "enqueue unknown option": Case("stem-enqueue", ("stem.echo", "--bogus"), ("--bogus",)),
    "stem unknown option": Case("stem", ("--bogus", "queues"), ("--bogus",)),
    "stem queues unknown option": Case("stem", ("queues", "--bogus"), ("--bogus",)),
    "stem dlq list unknown option": Case("stem", ("dlq", "list", "math", "--bogus"), ("--bogus",)),
    # a database path that is a folder
    "worker broker is a folder": Case(
        "stem-worker", ("--burst", "--broker", "dbdir"), ("dbdir", "folder"), folder
    ),
    "worker backend is a folder": Case(
        "stem-worker", ("--burst", "--backend", "dbdir"), ("dbdir", "folder"), folder
    ),
    "enqueue broker is a folder": Case(
        "stem-enqueue", ("stem.echo", "--broker", "dbdir"), ("dbdir", "folder"), folder
    ),
    "enqueue --wait backend is a folder": Case(
        "stem-enqueue", ("stem.echo", "--wait", "--backend", "dbdir"), ("dbdir", "folder"), folder
    ),
    "stem broker is a folder": Case(
        "stem", ("--broker", "dbdir", "queues"), ("dbdir", "folder"), folder
    ),
    "stem backend is a folder": Case(
        "stem", ("--backend", "dbdir", "tasks"), ("dbdir", "folder"), folder
    ),
    # a file that is not a SQLite database
    "worker broker not sqlite": Case(
        "stem-worker",
        ("--burst", "--broker", "notes.txt"),
        ("notes.txt", "not a SQLite"),
        not_sqlite,
    ),
    "worker backend not sqlite": Case(
        "stem-worker",
        ("--burst", "--backend", "notes.txt"),
        ("notes.txt", "not a SQLite"),
        not_sqlite,
    ),
    "enqueue broker not sqlite": Case(
        "stem-enqueue",
        ("stem.echo", "--broker", "notes.txt"),
        ("notes.txt", "not a SQLite"),
        not_sqlite,
    ),
    "stem broker not sqlite": Case(
        "stem", ("--broker", "notes.txt", "queues"), ("notes.txt", "not a SQLite"), not_sqlite
    ),
    "stem backend not sqlite": Case(
        "stem", ("--backend", "notes.txt", "result", "x"), ("notes.txt", "not a SQLite"), not_sqlite
    ),
    # a folder that cannot be created (a regular file is in the way)
    "worker folder cannot be created": Case(
        "stem-worker", ("--burst", "--broker", "plain/sub/b.sqlite"), ("plain",), under_a_file
    ),
    "worker backend folder cannot be created": Case(
        "stem-worker", ("--burst", "--backend", "plain/sub/r.sqlite"), ("plain",), under_a_file
    ),
    "enqueue folder cannot be created": Case(
        "stem-enqueue", ("stem.echo", "--broker", "plain/sub/b.sqlite"), ("plain",), under_a_file
    ),
    # --app problems
    "worker app missing module": Case(
        "stem-worker", ("--burst", "--app", "nosuchmodule_xyz"), ("nosuchmodule_xyz",)
    ),
    "enqueue app missing module": Case(
        "stem-enqueue", ("stem.echo", "--app", "nosuchmodule_xyz"), ("nosuchmodule_xyz",)
    ),
    "worker app missing file": Case(
        "stem-worker", ("--burst", "--app", "missing_tasks.py"), ("missing_tasks.py",)
    ),
    "worker app syntax error": Case(
        "stem-worker",
        ("--burst", "--app", "bad_syntax.py"),
        ("bad_syntax.py", "syntax error"),
        syntax_error,
    ),
    "enqueue app syntax error": Case(
        "stem-enqueue",
        ("stem.echo", "--app", "bad_syntax.py"),
        ("bad_syntax.py", "syntax error"),
        syntax_error,
    ),
    "worker app third-party import": Case(
        "stem-worker",
        ("--burst", "--app", "needs_dep.py"),
        ("needs_dep.py", "nosuchthirdpartypkg"),
        third_party,
    ),
    "enqueue app third-party import": Case(
        "stem-enqueue",
        ("stem.echo", "--app", "needs_dep.py"),
        ("needs_dep.py", "nosuchthirdpartypkg"),
        third_party,
    ),
    # option values
    "kwargs malformed json": Case(
        "stem-enqueue", ("stem.echo", "--kwargs", "{x: 1"), ("--kwargs",)
    ),
    "kwargs not an object": Case(
        "stem-enqueue", ("stem.echo", "--kwargs", "[1, 2]"), ("--kwargs",)
    ),
    "negative countdown": Case(
        "stem-enqueue", ("stem.echo", "--countdown", "-1"), ("--countdown",)
    ),
    "eta without timezone": Case(
        "stem-enqueue", ("stem.echo", "--eta", "2030-01-01T10:00:00"), ("--eta", "timezone")
    ),
    "eta not a time": Case("stem-enqueue", ("stem.echo", "--eta", "tomorrow"), ("--eta",)),
    "negative expires": Case("stem-enqueue", ("stem.echo", "--expires", "-5"), ("--expires",)),
    "worker bad log level": Case("stem-worker", ("--burst", "-l", "chatty"), ("chatty",)),
    "worker zero concurrency": Case("stem-worker", ("--burst", "-c", "0"), ("--concurrency",)),
    "tasks unknown state": Case("stem", ("tasks", "--state", "bogus"), ("--state", "bogus")),
}


def assert_refused(
    cli: Cli, tool: str, args: tuple[str, ...], names: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    """Run the tool and check the refusal; return the finished process."""
    before = snapshot(cli.work)
    done = cli.run(tool, *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{done.stderr}"
    assert lines[0].startswith(f"{tool}: error: "), lines[0]
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    assert done.stdout == ""
    assert snapshot(cli.work) == before, "a file was created or changed"
    return done


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_refused_on_existing_files(seeded: Cli, case: Case) -> None:
    """With a populated broker and backend in place: nothing of them changes."""
    case.setup(seeded)
    assert_refused(seeded, case.tool, case.args, case.names)


@pytest.mark.parametrize(
    "case",
    [
        CASES[name]
        for name in (
            "worker backend is a folder",
            "worker backend not sqlite",
            "worker backend folder cannot be created",
            "worker app third-party import",
            "enqueue broker not sqlite",
            "negative countdown",
        )
    ],
    ids=lambda case: " ".join(case.args),
)
def test_refused_before_any_file_is_created(cli: Cli, case: Case) -> None:
    """With no database yet: a bad second path is refused before the first file exists."""
    case.setup(cli)
    assert_refused(cli, case.tool, case.args, case.names)
    assert not cli.broker.exists() and not cli.backend.exists()


def test_unreadable_database_file(seeded: Cli) -> None:
    locked = seeded.work / "locked.sqlite"
    shutil.copy(seeded.broker, locked)
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip(
                "running as root: chmod 000 does not stop root from reading the file, "
                "so it cannot be made unreadable"
            )
        for tool, args in (
            ("stem-worker", ("--burst", "--broker", "locked.sqlite")),
            ("stem-enqueue", ("stem.echo", "--broker", "locked.sqlite")),
            ("stem", ("--broker", "locked.sqlite", "queues")),
        ):
            assert_refused(seeded, tool, args, ("locked.sqlite",))
    finally:
        locked.chmod(0o600)


@pytest.mark.parametrize("mode", [(), ("--json",)], ids=["plain", "json"])
def test_stem_queues_on_a_missing_broker_exits_2_and_creates_nothing(cli: Cli, mode: tuple) -> None:
    assert_refused(cli, "stem", (*mode, "queues"), ("broker", str(cli.broker)))
    assert list(cli.work.iterdir()) == []


def test_stem_result_on_a_missing_backend_exits_2_and_creates_nothing(cli: Cli) -> None:
    assert_refused(cli, "stem", ("result", "some-id"), ("backend", str(cli.backend)))
    assert list(cli.work.iterdir()) == []


DEBUG_CASES = {
    "not sqlite": (("--burst", "--broker", "notes.txt", "--debug"), not_sqlite, "not a SQLite"),
    "third-party import": (
        ("--burst", "--app", "needs_dep.py", "--debug"),
        third_party,
        "nosuchthirdpartypkg",
    ),
}


@pytest.mark.parametrize("case", DEBUG_CASES.values(), ids=DEBUG_CASES.keys())
def test_debug_shows_the_traceback_and_changes_nothing(seeded: Cli, case: tuple) -> None:
    args, setup, named = case
    setup(seeded)
    before = snapshot(seeded.work)
    done = seeded.run("stem-worker", *args)
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr
    assert named in done.stderr
    assert snapshot(seeded.work) == before


@pytest.mark.parametrize("case", DEBUG_CASES.values(), ids=DEBUG_CASES.keys())
def test_debug_keeps_the_usage_exit_code_2(seeded: Cli, case: tuple) -> None:
    """--debug adds the traceback; it is still a usage/configuration error (exit 2)."""
    args, setup, _named = case
    setup(seeded)
    done = seeded.run("stem-worker", *args)
    assert done.returncode == 2, f"exit {done.returncode} with --debug"
