"""Helpers for the command-line tests: the real console scripts, run in subprocesses.

Every test gets a ``Cli`` whose ``work`` folder is the working folder of the tools and
holds the broker (``broker.sqlite``) and the backend (``backend.sqlite``), named by
STEM_SQLITE_BROKER_PATH / STEM_SQLITE_BACKEND_PATH. Worker logs go to a separate
``logs`` folder so that listings of ``work`` show only what the tools created.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOOL_ENVIRONMENT, wait_for

BIN = Path(sys.executable).parent
TOOLS = ("stem-worker", "stem-enqueue", "stem")

CLEARED = TOOL_ENVIRONMENT

#: An app with a task per queue and a task that always fails without retry delays.
TASKS_PY = """\
from stem_sqlite import RetryPolicy, Stem

app = Stem()


@app.task(name="demo.add", queue="math")
def add(x, y):
    return x + y


@app.task(
    name="demo.boom",
    queue="math",
    max_retries=0,
    retry_policy=RetryPolicy(default_delay=0, jitter=False),
)
def boom(message="boom"):
    raise ValueError(message)
"""


class Cli:
    """Runs the console scripts with paths inside one test's folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.logs = root / "logs"
        self.work.mkdir()
        self.logs.mkdir()
        self.broker = self.work / "broker.sqlite"
        self.backend = self.work / "backend.sqlite"
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update(
            STEM_SQLITE_BROKER_PATH=str(self.broker),
            STEM_SQLITE_BACKEND_PATH=str(self.backend),
            PYTHONUNBUFFERED="1",
            # An --app file imported by a tool must not leave a __pycache__ behind in
            # the listings that check that nothing was created.
            PYTHONDONTWRITEBYTECODE="1",
            COLUMNS="100",
        )
        self.env = env
        self.processes: list[subprocess.Popen[str]] = []

    # -- running ----------

    def cmd(self, tool: str, *args: object) -> list[str]:
        return [str(BIN / tool), *map(str, args)]

    def run(
        self,
        tool: str,
        *args: object,
        env: dict[str, str] | None = None,
        timeout: float = 40,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``tool`` to its end (stdout and stderr are pipes: not a terminal)."""
        return subprocess.run(
            self.cmd(tool, *args),
            cwd=self.work,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, tool: str, *args: object, **kwargs: Any) -> str:
        """Run ``tool``, require exit 0, return its stdout."""
        done = self.run(tool, *args, **kwargs)
        assert done.returncode == 0, (
            f"{tool} {' '.join(map(str, args))} exited {done.returncode}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}"
        )
        return done.stdout

    def enqueue(self, *args: object, **kwargs: Any) -> str:
        """``stem-enqueue ARGS``; the one task id it printed."""
        out = self.ok("stem-enqueue", *args, **kwargs).splitlines()
        assert len(out) == 1, out
        return out[0]

    def start(
        self, tool: str, *args: object, log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Start ``tool`` in the background, its stderr (the log) into logs/<log>."""
        with open(self.logs / log, "w") as handle:  # the child keeps its own copy
            proc = subprocess.Popen(
                self.cmd(tool, *args),
                cwd=self.work,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=handle,
                text=True,
            )
        self.processes.append(proc)
        return proc

    def worker(
        self, *args: object, log: str = "worker.log", env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """A background stem-worker (one slot unless ``-c`` is given)."""
        extra = [] if "-c" in args or "--concurrency" in args else ["-c", "1"]
        return self.start("stem-worker", *extra, *args, log=log, env=env)

    def burst(self, *args: object, log: str = "burst.log", timeout: float = 40) -> str:
        """``stem-worker --burst``: exit 0 once the queues are empty; returns its log."""
        extra = [] if "-c" in args or "--concurrency" in args else ["-c", "1"]
        done = self.run("stem-worker", "--burst", *extra, *args, timeout=timeout)
        (self.logs / log).write_text(done.stderr)
        assert done.returncode == 0, f"burst worker exited {done.returncode}: {done.stderr}"
        return done.stderr

    def log(self, name: str = "worker.log") -> str:
        path = self.logs / name
        return path.read_text() if path.exists() else ""

    def wait_ready(self, name: str = "worker.log", timeout: float = 20) -> None:
        wait_for(
            lambda: " ready: " in self.log(name) or '"event": "ready"' in self.log(name),
            timeout=timeout,
            interval=0.05,
            message=f"the worker of {name} did not report ready: {self.log(name)}",
        )

    def stop(self, proc: subprocess.Popen[str], timeout: float = 20) -> int:
        """SIGTERM (warm shutdown) and wait for the exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def kill_leftovers(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    # -- reading through `stem` ----------

    def status(self, task_id: str) -> dict[str, Any] | None:
        """``stem --json result ID`` parsed; None when it exits 1 (no status)."""
        done = self.run("stem", "--json", "result", task_id)
        if done.returncode == 1:
            return None
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Every stored status, by task id (``stem --json tasks``)."""
        items = json.loads(self.ok("stem", "--json", "tasks", "--limit", "1000"))
        return {item["id"]: item for item in items}

    def queues(self) -> dict[str, dict[str, Any]]:
        rows = json.loads(self.ok("stem", "--json", "queues"))
        return {row["queue"]: row for row in rows}

    def wait_state(self, task_id: str, *states: str, timeout: float = 20) -> dict[str, Any]:
        """Poll ``stem result`` until the task is in one of ``states``."""
        seen: list[dict[str, Any] | None] = [None]

        def reached() -> dict[str, Any] | None:
            if not self.backend.exists():  # no worker has opened it yet
                return None
            seen[0] = status = self.status(task_id)
            return status if status and status["state"] in states else None

        try:
            return wait_for(reached, timeout=timeout, interval=0.05)
        except pytest.fail.Exception:
            pytest.fail(
                f"task {task_id} never reached {states}; last status: {seen[0]}\n"
                f"worker logs: {[self.log(p.name) for p in self.logs.iterdir()]}"
            )

    # -- files ----------

    def write(self, relative: str, text: str) -> Path:
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def write_app(self, relative: str = "tasks.py", text: str = TASKS_PY) -> Path:
        return self.write(relative, text)


def snapshot(folder: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``folder``: kind, mode, size, mtime and content digest."""
    # The folder's own mtime changes when a file is created in it, even if it is gone again.
    entries: dict[str, tuple[Any, ...]] = {".": ("dir", folder.stat().st_mtime_ns)}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        if path.is_dir():
            entries[str(path.relative_to(folder))] = ("dir", info.st_mode, info.st_mtime_ns)
            continue
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except PermissionError:
            digest = "unreadable"
        entries[str(path.relative_to(folder))] = (
            "file",
            info.st_mode,
            info.st_size,
            info.st_mtime_ns,
            digest,
        )
    return entries


def copy_databases(source: Path, target: Path) -> None:
    """Copy the broker and backend files (with any WAL files) from ``source``."""
    for path in source.iterdir():
        if ".sqlite" in path.name:
            shutil.copy2(path, target / path.name)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    tool = Cli(tmp_path)
    try:
        yield tool
    finally:
        tool.kill_leftovers()


@pytest.fixture(scope="session")
def seed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A broker and a backend with one finished task, made once by the real tools."""
    maker = Cli(tmp_path_factory.mktemp("seed"))
    maker.enqueue("stem.echo", "seed")
    maker.burst()
    maker.enqueue("stem.echo", "pending")
    return maker.work


@pytest.fixture
def seeded(cli: Cli, seed_folder: Path) -> Cli:
    """``cli`` with a copy of the seed files in its work folder."""
    copy_databases(seed_folder, cli.work)
    assert cli.broker.exists() and cli.backend.exists()
    return cli
