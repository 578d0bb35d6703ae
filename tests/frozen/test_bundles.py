"""The frozen bundles, built once per session from build.spec and run like a demo host
would: a clean environment (PATH=/usr/bin:/bin, LANG=C) and a folder outside the repo."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from task_context_mixed import MIXED_QUEUE
from task_context_mixed.demo import run_tracked

from stem_sqlite import SqliteResultBackend, TaskState
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if importlib.util.find_spec("PyInstaller") is None:
        if os.environ.get("CI"):
            pytest.fail("PyInstaller is missing: ./dev test installs the freeze extra")
        pytest.skip("PyInstaller is not installed (pip install -e '.[freeze]')")
    out = tmp_path_factory.mktemp("bundles")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            str(ROOT / "build.spec"),
            "--noconfirm",
            "--",
            "--out",
            str(out),
            "--work",
            str(ROOT / ".pyinstaller"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    return {
        "worker": out / "worker" / "bundle" / "bin" / "worker",
        "enqueue": out / "enqueue" / "bundle" / "bin" / "enqueue",
    }


@pytest.fixture
def host(tmp_path: Path) -> dict[str, str]:
    """The environment of a demo host: no Python, no venv, nothing from the repo."""
    folder = tmp_path / "host"
    folder.mkdir()
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C",
        "HOME": str(folder),
        "STEM_SQLITE_PATH": str(folder) + os.sep,
    }


def run(
    binary: Path,
    *args: str,
    env: dict[str, str],
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args],
        env=env,
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def backend_at(env: dict[str, str], base: str = "task_context_mixed") -> SqliteResultBackend:
    return SqliteResultBackend.open(
        Path(env["HOME"]) / f"{base}_backend.sqlite", cleanup_interval=0
    )


def test_version_and_help(bundles: dict[str, Path], host: dict[str, str]) -> None:
    for binary in bundles.values():
        version = run(binary, "--version", env=host)
        assert version.returncode == 0 and "stem-sqlite" in version.stdout
        usage = run(binary, "--help", env=host)
        assert usage.returncode == 0 and "Usage:" in usage.stdout, usage.stderr
    assert "STEM_SQLITE_BROKER_PATH" in run(bundles["worker"], "--help", env=host).stdout


def test_enqueue_then_burst_worker(bundles: dict[str, Path], host: dict[str, str]) -> None:
    ids = []
    for word in ("alpha", "beta", "gamma"):
        done = run(bundles["enqueue"], "stem.echo", word, "n=1", "-Q", "default", env=host)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    worker = run(bundles["worker"], "-Q", "default", "--burst", env=host)
    assert worker.returncode == 0, worker.stderr
    with backend_at(host) as backend:
        results = [backend.get(task_id) for task_id in ids]
    assert [r.payload for r in results if r] == [
        {"args": [w], "kwargs": {"n": 1}} for w in ("alpha", "beta", "gamma")
    ]


def write_user_app(folder: Path, extra_import: str = "") -> Path:
    lib = folder / "lib"
    lib.mkdir()
    (lib / "shout.py").write_text("def shout(text):\n    return text.upper() + '!'\n")
    tasks = folder / "mytasks.py"
    tasks.write_text(
        textwrap.dedent(f"""
        import logging.handlers  # any standard-library module is bundled
        import xml.etree.ElementTree as ElementTree
        {extra_import}
        from shout import shout  # found through STEM_PATH
        from stem_sqlite import Stem

        app = Stem()

        @app.task(name="user.shout", queue="user")
        def shout_task(text):
            return {{"text": shout(text), "xml": ElementTree.fromstring("<a>1</a>").text}}
    """)
    )
    return tasks


def test_user_task_file_is_imported_at_run_time(
    bundles: dict[str, Path], host: dict[str, str]
) -> None:
    tasks = write_user_app(Path(host["HOME"]))
    env = {**host, "STEM_PATH": str(Path(host["HOME"]) / "lib")}
    queued = run(bundles["enqueue"], "user.shout", "hello", "--app", str(tasks), env=env)
    assert queued.returncode == 0, queued.stderr
    worker = run(bundles["worker"], "--app", str(tasks), "--burst", env=env)
    assert worker.returncode == 0, worker.stderr
    with backend_at(host, "stem") as backend:
        status = backend.get(queued.stdout.strip())
    assert status is not None and status.payload == {"text": "HELLO!", "xml": "1"}


def test_missing_third_party_import_is_a_clear_error(
    bundles: dict[str, Path], host: dict[str, str]
) -> None:
    tasks = write_user_app(Path(host["HOME"]), extra_import="import frobnicate_not_installed")
    env = {**host, "STEM_PATH": str(Path(host["HOME"]) / "lib")}
    before = sorted(os.listdir(host["HOME"]))
    for binary in bundles.values():
        args = ["--app", str(tasks)]
        if binary.name == "enqueue":
            args = ["user.shout", "x", *args]
        done = run(binary, *args, env=env)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        line = done.stderr.strip()
        assert "\n" not in line
        assert "frobnicate_not_installed" in line and "STEM_PATH" in line and "rebuild" in line
    assert sorted(os.listdir(host["HOME"])) == before


def test_a_copied_bundle_still_runs(
    bundles: dict[str, Path], host: dict[str, str], tmp_path: Path
) -> None:
    copies = {}
    for name, binary in bundles.items():
        target = tmp_path / "elsewhere" / name
        shutil.copytree(binary.parent, target, symlinks=True)
        copies[name] = target / name
    queued = run(copies["enqueue"], "stem.echo", "copied", "-Q", "default", env=host)
    assert queued.returncode == 0, queued.stderr
    assert run(copies["worker"], "-Q", "default", "--burst", env=host).returncode == 0
    with backend_at(host) as backend:
        status = backend.get(queued.stdout.strip())
    assert status is not None and status.payload == ["copied"]


@pytest.fixture
def frozen_worker(
    bundles: dict[str, Path], host: dict[str, str]
) -> Iterator[subprocess.Popen[str]]:
    worker = subprocess.Popen(
        [str(bundles["worker"])],
        env=host,
        cwd=host["HOME"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield worker
    if worker.poll() is None:
        worker.kill()
        worker.wait()


def test_sigterm_is_a_warm_shutdown(
    bundles: dict[str, Path], host: dict[str, str], frozen_worker: subprocess.Popen[str]
) -> None:
    queued = run(bundles["enqueue"], "stem.sleep", "1.5", "-Q", MIXED_QUEUE, env=host)
    assert queued.returncode == 0, queued.stderr
    task_id = queued.stdout.strip()
    wait_for(
        lambda: (Path(host["HOME"]) / "task_context_mixed_backend.sqlite").exists(), timeout=30
    )
    with backend_at(host) as backend:
        wait_for(lambda: (s := backend.get(task_id)) and s.state is TaskState.RUNNING, timeout=30)
        frozen_worker.send_signal(signal.SIGTERM)
        output, _ = frozen_worker.communicate(timeout=30)
        assert frozen_worker.returncode == 0, output
        status = backend.get(task_id)
    assert status is not None and status.state is TaskState.SUCCEEDED


def test_bundled_example_is_the_default_app(
    bundles: dict[str, Path], host: dict[str, str], frozen_worker: subprocess.Popen[str]
) -> None:
    queued = run(bundles["enqueue"], "demo.inline_parent", "runId=frozen", env=host)
    assert queued.returncode == 0, queued.stderr
    parent_id = queued.stdout.strip()
    wait_for(
        lambda: (Path(host["HOME"]) / "task_context_mixed_backend.sqlite").exists(), timeout=30
    )
    with backend_at(host) as backend:
        parent = wait_for(
            lambda: (s := backend.get(parent_id)) and s.state.is_terminal and s, timeout=30
        )
        assert parent.state is TaskState.SUCCEEDED
        roots = [parent_id, parent.payload["inline"]]
        tasks = wait_for(
            lambda: (
                (t := run_tracked(backend, roots))
                and len(t) == 8
                and all(s.state.is_terminal for s in t.values())
                and t
            ),
            timeout=30,
        )
    assert all(s.state is TaskState.SUCCEEDED for s in tasks.values())
    names = sorted(s.meta["task"] for s in tasks.values())
    assert "demo.isolate_child" in names  # ran in a pool process of the frozen worker
