"""--help of every command and subcommand, --version, and the `python -m` entry points."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

from tests.cli.conftest import TOOLS, Cli

COMMANDS = [
    ("stem-worker",),
    ("stem-enqueue",),
    ("stem",),
    ("stem", "queues"),
    ("stem", "dlq"),
    ("stem", "dlq", "list"),
    ("stem", "dlq", "show"),
    ("stem", "dlq", "replay"),
    ("stem", "dlq", "purge"),
    ("stem", "purge"),
    ("stem", "result"),
    ("stem", "tasks"),
    ("stem", "workers"),
    ("stem", "health"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_renders(cli: Cli, command: tuple[str, ...]) -> None:
    tool, *sub = command
    done = cli.run(tool, *sub, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith(f"Usage: {' '.join(command)} ")
    assert "--help" in done.stdout
    assert list(cli.work.iterdir()) == []  # help opens no database


def test_worker_help_shows_every_environment_variable(cli: Cli) -> None:
    text = cli.ok("stem-worker", "--help")
    for name in (
        "STEM_SQLITE_BROKER_PATH",
        "STEM_SQLITE_BACKEND_PATH",
        "STEM_SQLITE_PATH",
        "WORKER_NAME",
        "STEM_APP",
        "STEM_PATH",
    ):
        assert name in text, f"{name} missing from stem-worker --help"
    for option in ("--concurrency", "--pool", "--visibility-timeout", "--burst", "--log-format"):
        assert option in text


def test_enqueue_help_lists_its_options(cli: Cli) -> None:
    text = cli.ok("stem-enqueue", "--help")
    for option in (
        "--kwargs",
        "--queue",
        "--priority",
        "--countdown",
        "--eta",
        "--expires",
        "--task-id",
        "--max-retries",
        "--ignore-result",
        "--count",
        "--wait",
        "--json",
        "--app",
    ):
        assert option in text, f"{option} missing from stem-enqueue --help"


@pytest.mark.parametrize("tool", TOOLS)
def test_version(cli: Cli, tool: str) -> None:
    out = cli.ok(tool, "--version")
    assert out.startswith(f"stem-sqlite {version('stem-sqlite')} ")
    assert list(cli.work.iterdir()) == []


@pytest.mark.parametrize(
    ("module", "usage"),
    [
        ("stem_cli.worker", "stem-worker"),
        ("stem_cli.enqueue", "stem-enqueue"),
        ("stem_cli", "stem"),
    ],
)
def test_python_m_entry_points(cli: Cli, module: str, usage: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=cli.work,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: {usage} ")
