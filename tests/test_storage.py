"""The SQLite files themselves: query plans, pragmas, migrations, identity, bad input,
permissions and the one-connection-per-file rule."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stem_sqlite import (
    ConfigurationError,
    Envelope,
    NotAStemDatabase,
    SchemaTooNew,
    SqliteBroker,
    SqliteResultBackend,
    StorageError,
    TaskState,
)
from stem_sqlite.sqlite import jobs_sql
from stem_sqlite.sqlite.schema import (
    BACKEND_APPLICATION_ID,
    BACKEND_MIGRATIONS,
    BROKER_APPLICATION_ID,
    BROKER_MIGRATIONS,
)

Opener = Callable[..., Any]
OPENERS = [
    pytest.param(SqliteBroker.open, id="broker"),
    pytest.param(SqliteResultBackend.open, id="backend"),
]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[SqliteBroker]:
    with SqliteBroker.open(tmp_path / "broker.sqlite", sweeper_interval=0) as opened:
        yield opened


def pragma(db: Any, name: str) -> Any:
    with db.database.read() as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


def raw(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` on ``path`` with a plain sqlite3 connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- (a) the claim query plan -------------------------------------------------------------

CLAIM_PARAMS = {
    "ns": "stem",
    "queue": "default",
    "now": 0,
    "n": 10,
    "token": "t",
    "consumer": "c",
    "default_lease_ms": 1000,
}


@pytest.mark.parametrize("statement", ["CLAIM_SUBQUERY_PLAN", "CLAIM_JOBS"])
def test_claim_walks_the_claim_index(broker: SqliteBroker, statement: str) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    broker.publish_many(
        [Envelope("t", priority=i % 3, not_before=soon if i % 2 else None) for i in range(50)]
    )
    with broker.database.read() as conn:
        rows = conn.execute(
            "EXPLAIN QUERY PLAN " + getattr(jobs_sql, statement), CLAIM_PARAMS
        ).fetchall()
    plan = "\n".join(str(row[3]) for row in rows)
    assert "INDEX stem_jobs_claim" in plan, plan
    assert "SCAN" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan


# -- (b) pragmas and column types ---------------------------------------------------------


@pytest.mark.parametrize("open_", OPENERS)
def test_wal_and_synchronous_normal_by_default(tmp_path: Path, open_: Opener) -> None:
    with open_(tmp_path / "db.sqlite") as db:
        assert str(pragma(db, "journal_mode")).lower() == "wal"
        assert pragma(db, "synchronous") == 1  # NORMAL


@pytest.mark.parametrize("open_", OPENERS)
def test_synchronous_full_on_request(tmp_path: Path, open_: Opener) -> None:
    with open_(tmp_path / "db.sqlite", synchronous="FULL") as db:
        assert str(pragma(db, "journal_mode")).lower() == "wal"
        assert pragma(db, "synchronous") == 2  # FULL


def test_broker_times_are_stored_as_integers(broker: SqliteBroker) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    broker.publish(Envelope("t", not_before=later))
    broker.publish(Envelope("t"))
    with broker.consume("default") as consumer:
        delivery = consumer.receive(timeout=5)
        assert delivery is not None
        assert broker.dead_letter(delivery, reason="test")
    with broker.database.read() as conn:
        jobs = conn.execute(
            "SELECT typeof(visible_at), typeof(created_at), typeof(updated_at) FROM stem_jobs"
        ).fetchall()
        dead = conn.execute("SELECT typeof(dead_at) FROM stem_dead_letters").fetchall()
    assert jobs == [("integer", "integer", "integer")]
    assert dead == [("integer",)]


def test_backend_times_are_stored_as_integers(tmp_path: Path) -> None:
    with SqliteResultBackend.open(tmp_path / "r.sqlite", cleanup_interval=0) as backend:
        backend.set("t1", TaskState.SUCCEEDED, payload=1)
        with backend.database.read() as conn:
            row = conn.execute(
                "SELECT typeof(created_at), typeof(updated_at), typeof(expires_at)"
                " FROM stem_task_results"
            ).fetchone()
    assert row == ("integer", "integer", "integer")


# -- (c) migrations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("open_", "migrations", "app_id"),
    [
        pytest.param(SqliteBroker.open, BROKER_MIGRATIONS, BROKER_APPLICATION_ID, id="broker"),
        pytest.param(
            SqliteResultBackend.open, BACKEND_MIGRATIONS, BACKEND_APPLICATION_ID, id="backend"
        ),
    ],
)
def test_new_file_is_migrated_to_the_latest_version(
    tmp_path: Path, open_: Opener, migrations: list[list[str]], app_id: int
) -> None:
    path = tmp_path / "new" / "db.sqlite"
    with open_(path):
        pass
    assert raw(path, "PRAGMA user_version") == [(len(migrations),)]
    assert raw(path, "PRAGMA application_id") == [(app_id,)]


def _open_new_file_at_once(path: str, barrier: Any, results: Any, index: int) -> None:
    """Child process: open the same new broker file as its siblings, at the same moment."""
    try:
        barrier.wait(timeout=30)
        with SqliteBroker.open(path, sweeper_interval=0) as opened:
            opened.publish(Envelope("t", args=(index,)))
            results.put(("ok", pragma(opened, "user_version")))
    except BaseException as exc:  # noqa: BLE001 - report anything to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "race" / "broker.sqlite"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_open_new_file_at_once, args=(str(path), barrier, results, i))
        for i in range(4)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert outcomes == [("ok", len(BROKER_MIGRATIONS))] * 4
    assert [proc.exitcode for proc in procs] == [0] * 4
    assert raw(path, "SELECT count(*) FROM sqlite_master WHERE name = 'stem_jobs'") == [(1,)]
    assert raw(path, "SELECT count(*) FROM stem_jobs") == [(4,)]
    assert raw(path, "PRAGMA user_version") == [(len(BROKER_MIGRATIONS),)]


# -- (d) a schema newer than the code -------------------------------------------------------


@pytest.mark.parametrize("open_", OPENERS)
def test_schema_too_new_is_refused_and_left_untouched(tmp_path: Path, open_: Opener) -> None:
    path = tmp_path / "db.sqlite"
    with open_(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew, match="99"):
        open_(path)
    assert path.read_bytes() == before
    assert raw(path, "PRAGMA user_version") == [(99,)]


# -- (e) a file of the other role ------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(SqliteBroker.open, SqliteResultBackend.open, id="broker-as-backend"),
        pytest.param(SqliteResultBackend.open, SqliteBroker.open, id="backend-as-broker"),
    ],
)
def test_file_of_the_other_role_is_refused(tmp_path: Path, first: Opener, second: Opener) -> None:
    path = tmp_path / "db.sqlite"
    with first(path):
        pass
    before = path.read_bytes()
    with pytest.raises(ConfigurationError) as caught:
        second(path)
    message = str(caught.value)
    assert str(path) in message
    assert "broker" in message and "backend" in message
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(SqliteBroker.open, SqliteResultBackend.open, id="broker-first"),
        pytest.param(SqliteResultBackend.open, SqliteBroker.open, id="backend-first"),
    ],
)
def test_same_path_for_both_roles_in_one_process_is_refused(
    tmp_path: Path, first: Opener, second: Opener
) -> None:
    path = tmp_path / "db.sqlite"
    with first(path) as opened:
        with pytest.raises(ConfigurationError) as caught:
            second(path)
        message = str(caught.value)
        assert str(path) in message
        assert "broker" in message and "backend" in message
        assert not opened.database.closed  # the first one keeps working


# -- (f) bad input changes nothing ---------------------------------------------------------


@pytest.mark.parametrize("queue", ["", "   "])
def test_empty_queue_name_is_refused(broker: SqliteBroker, queue: str) -> None:
    broker.publish(Envelope("t"))
    with pytest.raises(ValueError, match="queue"):
        broker.publish(Envelope("t"), queue=queue)
    with pytest.raises(ValueError, match="queue"):
        broker.publish_many([Envelope("t"), Envelope("t", queue=queue)])
    with pytest.raises(ValueError, match="queue"):
        broker.consume(queue)
    assert broker.queues() == ["default"]
    assert broker.pending_count("default") == 1


def test_non_json_payload_is_refused_naming_the_key(broker: SqliteBroker) -> None:
    when = datetime.now(UTC)
    with pytest.raises(TypeError, match=r"kwargs\['when'\]"):
        broker.publish(Envelope("t", kwargs={"when": when}))
    with pytest.raises(TypeError, match=r"args\[1\]"):
        broker.publish_many([Envelope("t"), Envelope("t", args=(1, {1, 2}))])
    with pytest.raises(TypeError, match=r"headers\['x'\]"):
        broker.publish(Envelope("t", headers={"x": float("nan")}))
    assert broker.pending_count("default") == 0
    assert broker.queues() == []


def test_negative_lease_extension_is_refused(broker: SqliteBroker) -> None:
    broker.publish(Envelope("t"))
    with broker.consume("default") as consumer:
        delivery = consumer.receive(timeout=5)
        assert delivery is not None
        with broker.database.read() as conn:
            before = conn.execute("SELECT visible_at FROM stem_jobs").fetchall()
        for by in (-1, timedelta(seconds=-1), float("nan")):
            with pytest.raises(ValueError, match="by"):
                broker.extend_lease(delivery, by)
        with broker.database.read() as conn:
            assert conn.execute("SELECT visible_at FROM stem_jobs").fetchall() == before
        assert broker.ack(delivery)


BAD_KNOBS = [
    pytest.param(SqliteBroker.open, name, id=f"broker-{name}")
    for name in (
        "default_visibility_timeout",
        "poll_interval",
        "sweeper_interval",
        "dead_letter_retention",
        "change_check_interval",
    )
] + [
    pytest.param(SqliteResultBackend.open, name, id=f"backend-{name}")
    for name in (
        "default_ttl",
        "group_default_ttl",
        "heartbeat_ttl",
        "cleanup_interval",
        "poll_interval",
    )
]


@pytest.mark.parametrize(("open_", "knob"), BAD_KNOBS)
@pytest.mark.parametrize("value", [-1, timedelta(seconds=-5)])
def test_negative_knob_is_refused_before_any_file_is_made(
    tmp_path: Path, open_: Opener, knob: str, value: Any
) -> None:
    folder = tmp_path / "never"
    with pytest.raises(ValueError, match=knob):
        open_(folder / "db.sqlite", **{knob: value})
    assert not folder.exists()


@pytest.mark.parametrize("open_", OPENERS)
def test_unknown_synchronous_mode_is_refused_before_any_file_is_made(
    tmp_path: Path, open_: Opener
) -> None:
    folder = tmp_path / "never"
    with pytest.raises(ConfigurationError, match="synchronous"):
        open_(folder / "db.sqlite", synchronous="OFF")
    assert not folder.exists()


def test_naive_datetimes_are_refused(broker: SqliteBroker) -> None:
    naive = datetime.now()
    with pytest.raises(ValueError, match="not_before"):
        Envelope("t", not_before=naive)
    with pytest.raises(ValueError, match="not_before"):
        Envelope("t").with_changes(not_before=naive)
    broker.publish(Envelope("t"))
    with broker.consume("default") as consumer:
        delivery = consumer.receive(timeout=5)
        assert delivery is not None
        assert broker.dead_letter(delivery)
    with pytest.raises(ValueError, match="since"):
        broker.purge_dead_letters("default", since=naive)
    with pytest.raises(ValueError, match="since"):
        broker.replay_dead_letters("default", since=naive)
    assert len(broker.list_dead_letters("default").entries) == 1
    assert broker.pending_count("default") == 0


@pytest.mark.parametrize("open_", OPENERS)
def test_folder_that_cannot_be_created(tmp_path: Path, open_: Opener) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    with pytest.raises(StorageError) as caught:
        open_(blocker / "sub" / "db.sqlite")
    assert str(blocker / "sub") in str(caught.value)
    assert blocker.read_text() == "a regular file"


@pytest.mark.parametrize("open_", OPENERS)
def test_path_that_is_a_folder(tmp_path: Path, open_: Opener) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(StorageError) as caught:
        open_(folder)
    assert str(folder) in str(caught.value)
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("open_", OPENERS)
def test_text_file_is_not_a_stem_database(tmp_path: Path, open_: Opener) -> None:
    path = tmp_path / "notes.sqlite"
    text = "these are my notes, not a database\n" * 50
    path.write_text(text)
    with pytest.raises(NotAStemDatabase) as caught:
        open_(path)
    assert str(path) in str(caught.value)
    assert path.read_text() == text


@pytest.mark.parametrize("open_", OPENERS)
def test_database_of_another_application_is_not_touched(tmp_path: Path, open_: Opener) -> None:
    path = tmp_path / "app.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(NotAStemDatabase) as caught:
        open_(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == before
    assert raw(path, "SELECT name FROM sqlite_master") == [("users",)]
    assert raw(path, "PRAGMA journal_mode") == [("delete",)]


# -- (g) file permissions ----------------------------------------------------------------


@pytest.mark.parametrize("open_", OPENERS)
def test_database_files_are_private_to_their_owner(tmp_path: Path, open_: Opener) -> None:
    path = tmp_path / "db.sqlite"
    old = os.umask(0o022)
    try:
        with open_(path) as db:
            if isinstance(db, SqliteBroker):
                db.publish(Envelope("t"))
            else:
                db.set("t1", TaskState.QUEUED)
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files if p.exists()}
    finally:
        os.umask(old)
    assert path.name in modes
    assert modes == dict.fromkeys(modes, 0o600)


# -- (h) one connection per file per process ------------------------------------------------


def test_opens_of_one_file_share_one_connection(tmp_path: Path) -> None:
    path = tmp_path / "broker.sqlite"
    first = SqliteBroker.open(path, sweeper_interval=0)
    second = SqliteBroker.open(tmp_path / "." / "broker.sqlite", sweeper_interval=0)
    try:
        assert second.database is first.database
        first.close()
        assert not second.database.closed
        second.publish(Envelope("t", args=(1,)))
        with second.consume("default") as consumer:
            delivery = consumer.receive(timeout=5)
            assert delivery is not None and delivery.envelope.args == (1,)
            assert second.ack(delivery)
        assert second.pending_count("default") == 0
    finally:
        first.close()
        second.close()
    assert second.database.closed


# -- ack_and_refill: a worker's acks and its next claim in one transaction -----------


def test_ack_and_refill_acks_then_claims_only_the_freed_slots(tmp_path: Path) -> None:
    with SqliteBroker.open(tmp_path / "b.sqlite") as broker:
        broker.publish_many(
            [Envelope("t", args=[i], queue="q", visibility_timeout=60) for i in range(10)]
        )
        consumer = broker.consume("q", prefetch=3)
        first = [consumer.receive(timeout=1) for _ in range(3)]
        assert all(first) and consumer.held == 3

        acked = consumer.ack_and_refill([first[0], first[1]])

        assert acked == [True, True]
        # Two slots freed, two jobs claimed into the buffer: never past the prefetch.
        assert consumer.held == 3
        assert broker.inflight_count("q") == 3 and broker.pending_count("q") == 5
        refilled = consumer.receive(timeout=0)
        assert refilled is not None and refilled.envelope.args == (3,)
        # A stale receipt is refused and still frees nothing it does not hold.
        assert consumer.ack_and_refill([first[0]]) == [False]
        consumer.close()
        assert broker.inflight_count("q") == 2  # the unsent refill went back at close
        assert consumer.ack_and_refill([first[2]]) == [True]  # closed: no claim
        assert broker.inflight_count("q") == 1


# -- noticing other processes' commits -------------------------------------------------


def test_change_token_moves_with_every_commit_of_another_connection(tmp_path: Path) -> None:
    with SqliteBroker.open(tmp_path / "b.sqlite") as broker:
        db = broker.database
        before = db.change_token()
        assert isinstance(before, bytes)  # read from the wal-index header, not the pragma
        assert db.change_token() == before  # nothing committed: no change
        other = sqlite3.connect(tmp_path / "b.sqlite")
        try:
            other.execute("UPDATE stem_jobs SET priority = 1 WHERE 0")  # commits nothing
            assert db.change_token() == before
            with other:
                other.execute("CREATE TABLE other_process_was_here (x)")
        finally:
            other.close()
        assert db.change_token() != before


def test_wal_index_header_of_a_file_without_one_is_none(tmp_path: Path) -> None:
    from stem_sqlite.sqlite.walindex import WalIndexHeader

    header = WalIndexHeader(tmp_path / "missing.sqlite")
    assert header.snapshot() is None
    assert header.snapshot() is None  # and it does not try again


def test_an_idle_consumer_looks_half_as_often_after_a_second_without_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What keeps an idle worker under 2 % of a core (W5): commits of other processes
    are looked for every change_check_interval while jobs come, twice that once none
    has come for a second."""
    with SqliteBroker.open(
        tmp_path / "b.sqlite", change_check_interval=0.005, poll_interval=0.25
    ) as broker:
        db = broker.database
        checks: list[float] = []
        real_wait = db.wait_for_change

        def spy(mark: Any, timeout: float, check_every: float) -> bool:
            checks.append(check_every)
            return real_wait(mark, timeout, check_every)

        monkeypatch.setattr(db, "wait_for_change", spy)
        with broker.consume("idle") as consumer:
            broker.publish(Envelope("idle.task", queue="idle"))
            delivery = consumer.receive(timeout=5)
            assert delivery is not None and broker.ack(delivery)
            broker.wait_for_change(broker.change_mark(), 0.01)
            assert checks == [0.005], "just after a claim: the short interval"
            assert consumer.receive(timeout=1.3) is None  # waits past the quiet second
        assert checks[1] == 0.005 and checks[-1] == 0.01, checks
        broker.wait_for_change(broker.change_mark(), 0.01)
        assert checks[-1] == 0.01, "the several-queue wait backs off the same way"
