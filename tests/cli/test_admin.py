"""`stem` against a populated database, in both output modes: tab-separated tables when
stdout is not a terminal, and --json (api.md section 9, issue 4 item 3)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.conftest import Cli, copy_databases
from tests.conftest import wait_for


@dataclass(frozen=True)
class Populated:
    """The folder of a broker and a backend made by the real tools, and its task ids."""

    folder: Path
    added: str  # demo.add 2 3 on queue math: succeeded, 5
    dead: tuple[str, ...]  # demo.boom on queue math, max retries 0: failed, dead letters
    echoed: str  # stem.echo hello on queue default: succeeded
    idle: tuple[str, ...]  # two jobs pending on queue idle (no worker serves it)
    delayed: str  # one job delayed an hour on queue default


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    maker = Cli(tmp_path_factory.mktemp("populated"))
    maker.write_app()
    added = maker.enqueue("demo.add", "2", "3", "--app", "tasks.py")
    dead = tuple(maker.enqueue("demo.boom", f"dead {n}", "--app", "tasks.py") for n in range(2))
    echoed = maker.enqueue("stem.echo", "hello")
    maker.burst("--app", "tasks.py", "-Q", "default", "-Q", "math")
    idle = tuple(maker.enqueue("stem.echo", "waiting", "-Q", "idle") for _ in range(2))
    delayed = maker.enqueue("stem.echo", "later", "--countdown", "3600")
    return Populated(maker.work, added, dead, echoed, idle, delayed)


@pytest.fixture
def admin(cli: Cli, populated: Populated) -> Cli:
    """A test's own copy of the populated files."""
    copy_databases(populated.folder, cli.work)
    return cli


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of a plain (tab-separated) table."""
    lines = text.splitlines()
    assert lines, "no output"
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def fields(text: str) -> dict[str, str]:
    """A plain field/value table as a dict."""
    header, rows = table(text)
    assert header == ["field", "value"]
    return {row[0]: row[1] for row in rows}


EXPECTED_COUNTS = {
    "default": {"pending": 0, "delayed": 1, "inflight": 0, "dead": 0},
    "idle": {"pending": 2, "delayed": 0, "inflight": 0, "dead": 0},
    "math": {"pending": 0, "delayed": 0, "inflight": 0, "dead": 2},
}


def test_queues_in_both_modes(admin: Cli) -> None:
    header, rows = table(admin.ok("stem", "queues"))
    assert header == ["queue", "pending", "delayed", "in flight", "dead"]
    plain = {row[0]: [int(cell) for cell in row[1:]] for row in rows}
    assert plain == {
        name: [c["pending"], c["delayed"], c["inflight"], c["dead"]]
        for name, c in EXPECTED_COUNTS.items()
    }
    rows_json = json.loads(admin.ok("stem", "--json", "queues"))
    assert {row.pop("queue"): row for row in rows_json} == EXPECTED_COUNTS


def test_dlq_list_in_both_modes(admin: Cli, populated: Populated) -> None:
    header, rows = table(admin.ok("stem", "dlq", "list", "math"))
    assert header == ["id", "task", "attempt", "reason", "dead at"]
    assert sorted(row[0] for row in rows) == sorted(populated.dead)
    assert {row[1] for row in rows} == {"demo.boom"}
    listed = json.loads(admin.ok("stem", "--json", "dlq", "list", "math"))
    assert sorted(e["id"] for e in listed["entries"]) == sorted(populated.dead)
    assert all(e["task"] == "demo.boom" and e["reason"] for e in listed["entries"])
    assert listed["next_offset"] is None
    assert json.loads(admin.ok("stem", "--json", "dlq", "list", "default"))["entries"] == []
    header, rows = table(admin.ok("stem", "dlq", "list", "default"))
    assert rows == []


def test_dlq_show_in_both_modes(admin: Cli, populated: Populated) -> None:
    dead_id = populated.dead[0]
    shown = fields(admin.ok("stem", "dlq", "show", "math", dead_id))
    assert shown["id"] == dead_id and shown["task"] == "demo.boom"
    assert json.loads(shown["envelope"])["args"] == ["dead 0"]
    data = json.loads(admin.ok("stem", "--json", "dlq", "show", "math", dead_id))
    assert (data["id"], data["task"], data["queue"]) == (dead_id, "demo.boom", "math")
    assert data["envelope"]["args"] == ["dead 0"]
    for mode in ([], ["--json"]):
        missing = admin.run("stem", *mode, "dlq", "show", "math", "no-such-id")
        assert missing.returncode == 1
        assert missing.stdout == "" and "no-such-id" in missing.stderr


@pytest.mark.parametrize("mode", ["plain", "json"])
def test_dlq_replay(admin: Cli, populated: Populated, mode: str) -> None:
    if mode == "json":
        dry = json.loads(admin.ok("stem", "--json", "dlq", "replay", "math", "--dry-run"))
        assert (dry["dry_run"], dry["replayed"]) == (True, [])
        assert sorted(dry["entries"]) == sorted(populated.dead)
        assert admin.queues()["math"]["dead"] == 2  # a dry run changes nothing
        replayed = json.loads(admin.ok("stem", "--json", "dlq", "replay", "math"))
        assert replayed["dry_run"] is False
        assert sorted(replayed["replayed"]) == sorted(populated.dead)
    else:
        out = admin.ok("stem", "dlq", "replay", "math")
        assert out.splitlines()[0] == "replayed 2 job(s)"
        assert sorted(line.strip() for line in out.splitlines()[1:]) == sorted(populated.dead)
    counts = admin.queues()["math"]
    assert (counts["pending"], counts["dead"]) == (2, 0)


@pytest.mark.parametrize("mode", ["plain", "json"])
def test_dlq_purge(admin: Cli, mode: str) -> None:
    if mode == "json":
        assert json.loads(admin.ok("stem", "--json", "dlq", "purge", "math")) == {"purged": 2}
    else:
        assert admin.ok("stem", "dlq", "purge", "math") == "purged 2 dead letter(s)\n"
    counts = admin.queues()
    assert counts.get("math", {"dead": 0})["dead"] == 0
    assert counts.get("idle", {}).get("pending") == 2  # other queues untouched


@pytest.mark.parametrize("mode", ["plain", "json"])
def test_purge(admin: Cli, mode: str) -> None:
    if mode == "json":
        assert json.loads(admin.ok("stem", "--json", "purge", "idle")) == {"purged": 2}
    else:
        assert admin.ok("stem", "purge", "idle") == "purged 2 job(s)\n"
    counts = admin.queues()
    assert counts.get("idle", {"pending": 0})["pending"] == 0
    assert counts["default"]["delayed"] == 1  # other queues untouched
    assert counts["math"]["dead"] == 2  # purge keeps the dead letters


def test_result_in_both_modes(admin: Cli, populated: Populated) -> None:
    shown = fields(admin.ok("stem", "result", populated.added))
    assert shown["id"] == populated.added
    assert (shown["state"], shown["result"], shown["task"]) == ("succeeded", "5", "demo.add")
    data = json.loads(admin.ok("stem", "--json", "result", populated.added))
    assert (data["id"], data["state"], data["result"]) == (populated.added, "succeeded", 5)
    failed = json.loads(admin.ok("stem", "--json", "result", populated.dead[1]))
    assert failed["state"] == "failed" and failed["error"]["message"] == "dead 1"
    for mode in ([], ["--json"]):
        missing = admin.run("stem", *mode, "result", "no-such-task")
        assert missing.returncode == 1
        assert missing.stdout == "" and "no-such-task" in missing.stderr


def test_tasks_in_both_modes_with_filters(admin: Cli, populated: Populated) -> None:
    stored = {populated.added, *populated.dead, populated.echoed}
    header, rows = table(admin.ok("stem", "tasks"))
    assert header == ["id", "task", "state", "attempt", "result", "updated"]
    assert {row[0] for row in rows} == stored
    assert {row[0]: row[2] for row in rows}[populated.added] == "succeeded"

    def ids(*options: str) -> list[str]:
        return [item["id"] for item in json.loads(admin.ok("stem", "--json", "tasks", *options))]

    assert set(ids()) == stored
    assert sorted(ids("--state", "failed")) == sorted(populated.dead)
    assert sorted(ids("--queue", "math")) == sorted([populated.added, *populated.dead])
    assert ids("--state", "succeeded", "--queue", "default") == [populated.echoed]
    assert len(ids("--limit", "1")) == 1
    header, rows = table(admin.ok("stem", "tasks", "--state", "failed", "--limit", "1"))
    assert len(rows) == 1 and rows[0][0] in populated.dead and rows[0][2] == "failed"


def test_workers_in_both_modes(admin: Cli) -> None:
    proc = admin.worker("-Q", "spare", "--name", "live-1")

    def listed() -> dict[str, object] | None:
        items = json.loads(admin.ok("stem", "--json", "workers"))
        return next((item for item in items if item["name"] == "live-1"), None)

    item = wait_for(listed, timeout=10, message="the live worker is not listed")
    assert item["queues"] == ["spare"] and item["inflight"] == 0
    assert isinstance(item["age"], float | int) and 0 <= item["age"] < 60
    header, rows = table(admin.ok("stem", "workers"))
    assert header == ["name", "age (s)", "in flight", "queues"]
    live = [row for row in rows if row[0] == "live-1"]
    assert len(live) == 1 and live[0][2:] == ["0", "spare"]
    assert admin.stop(proc) == 0


def wait_for_heartbeat(cli: Cli, name: str) -> None:
    """Until `stem workers` lists ``name`` (the first heartbeat follows the banner)."""

    def beating() -> bool:
        if not cli.backend.exists():
            return False
        items = json.loads(cli.ok("stem", "--json", "workers"))
        return any(item["name"] == name for item in items)

    wait_for(beating, timeout=15, interval=0.05, message=f"no heartbeat of {name}")


def test_health_is_0_with_a_running_worker(cli: Cli) -> None:
    proc = cli.worker("--name", "healthy-1")
    wait_for_heartbeat(cli, "healthy-1")
    done = cli.run("stem", "health")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("healthy")
    done = cli.run("stem", "--json", "health")
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert (report["healthy"], report["problems"]) == (True, [])
    assert report["fresh_workers"] >= 1
    assert cli.stop(proc) == 0


def test_health_is_not_0_once_the_only_worker_has_stopped(cli: Cli) -> None:
    proc = cli.worker("--name", "gone-1")
    wait_for_heartbeat(cli, "gone-1")
    assert cli.stop(proc) == 0
    done = cli.run("stem", "health")
    assert done.returncode != 0, f"healthy with no running worker: {done.stdout}"
    done = cli.run("stem", "--json", "health")
    assert done.returncode != 0
    assert json.loads(done.stdout)["healthy"] is False


def test_health_is_not_0_without_any_worker_heartbeat(cli: Cli) -> None:
    # A producer that waited creates both files, and no worker ever ran.
    waited = cli.run("stem-enqueue", "stem.echo", "--wait", "--timeout", "0.1")
    assert waited.returncode == 1 and cli.broker.exists() and cli.backend.exists()
    done = cli.run("stem", "health")
    assert done.returncode != 0
    assert "heartbeat" in done.stderr
    done = cli.run("stem", "--json", "health")
    assert done.returncode != 0
    report = json.loads(done.stdout)
    assert (report["healthy"], report["fresh_workers"]) == (False, 0)


def test_health_is_not_0_with_a_missing_file(cli: Cli) -> None:
    for mode in ([], ["--json"]):
        done = cli.run("stem", *mode, "health")
        assert done.returncode != 0
        assert "broker" in done.stdout + done.stderr
    assert list(cli.work.iterdir()) == []  # nothing created
    cli.enqueue("stem.echo")  # a producer creates the broker only
    assert cli.broker.exists() and not cli.backend.exists()
    done = cli.run("stem", "--json", "health")
    assert done.returncode != 0
    report = json.loads(done.stdout)
    assert report["healthy"] is False
    assert any(problem.startswith("backend") for problem in report["problems"])
    assert not cli.backend.exists()


def test_json_is_accepted_after_the_subcommand(admin: Cli, populated: Populated) -> None:
    """`--json` everywhere (issue 4): `stem result ID --json` as well as `stem --json result ID`."""
    refused = []
    for command in (
        ("queues",),
        ("result", populated.added),
        ("dlq", "list", "math"),
        ("dlq", "show", "math", populated.dead[0]),
        ("tasks", "--state", "failed"),
        ("workers",),
        ("purge", "idle"),
    ):
        done = admin.run("stem", *command, "--json")
        if done.returncode != 0:
            refused.append(f"stem {' '.join(command)} --json: {done.stderr.strip()}")
            continue
        json.loads(done.stdout)
    assert not refused, "\n".join(refused)
