"""The result-backend contract suite (stem-contract.md section 3.1, RT-1..RT-15, and the
backend fixes of section 10 and Appendix A).

It is written once against the public ``ResultBackend`` API and the ``engine`` /
``backend`` fixtures of ``tests/contract/conftest.py``, so it runs unchanged against
every engine listed there. The fixture backend keeps every TTL at 1 s; tests that
need shorter lives open their own backend with ``engine.backend(...)``.

A watch reports the writes made *after* it started, and a Python generator starts
on its first ``next()``. ``primed_watch`` therefore keeps writing marker statuses
from a helper thread until the watch has reported one: from then on the watch is
surely listening, with no sleeping and no race.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stem_sqlite import (
    GroupDescriptor,
    InvalidArgument,
    ResultTimeout,
    StatusWrite,
    StemError,
    TaskError,
    TaskState,
    TaskStatus,
    WorkerHeartbeat,
)
from tests.conftest import wait_for

# The contract suite passes the encoder id in every meta it gives the backend (RT-14).
ENCODER = {"__stemResultEncoder": "json"}
PRIMER = "contract.primer"
GROUP_INDEX = "stem.groupIndex"


# -- helpers -------------------------------------------------------------------------------


def meta(**values: Any) -> dict[str, Any]:
    return {**ENCODER, **values}


def primed_watch(backend: Any, task_id: str, *, timeout: float = 10.0) -> Iterator[TaskStatus]:
    """``backend.watch(task_id)``, returned once it has reported a write (so it is listening).

    Marker statuses (state ``retried``, meta ``PRIMER``) are written until the watch
    reports one; later markers may still follow, drop them with :func:`real`.
    """
    watch = backend.watch(task_id, timeout=timeout)
    stop = threading.Event()

    def keep_writing() -> None:
        for n in range(1000):
            if stop.is_set():
                return
            backend.set(task_id, TaskState.RETRIED, attempt=n, meta=meta(**{PRIMER: True}))
            stop.wait(0.01)

    writer = threading.Thread(target=keep_writing, name="watch-primer", daemon=True)
    writer.start()
    try:
        first = next(watch, None)
    finally:
        stop.set()
        writer.join(timeout=10)
    assert first is not None, "watch() reported none of the writes made by this process"
    assert first.meta.get(PRIMER) is True
    return watch


def real(statuses: Iterable[TaskStatus]) -> list[TaskStatus]:
    """The statuses that are not watch-priming markers."""
    return [status for status in statuses if not status.meta.get(PRIMER)]


def let_clock_move(ms: float = 5) -> None:
    """Let the wall clock pass ``ms`` so that two writes get distinct update times."""
    start = time.time()
    wait_for(lambda: time.time() >= start + ms / 1000, interval=0.001)


def heartbeat(worker_id: str, *, inflight: int = 0, **extras: Any) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker_id,
        timestamp=datetime(2025, 3, 4, 5, 6, 7, 250000, tzinfo=UTC),
        inflight=inflight,
        queues=[{"name": "default", "inflight": inflight}],
        concurrency=1,
        extras=dict(extras),
    )


def ids(page: Any) -> list[str]:
    return [item.status.id for item in page.items]


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def quiet_backend(engine: Any) -> Iterator[Any]:
    """A backend whose cleanup pass never runs during the test, so an expiry check
    proves that expiry applies when reading (R-2), not only once cleanup has run."""
    with engine.backend(cleanup_interval=3600) as opened:
        yield opened


# -- RT-1..RT-5: task statuses -----------------------------------------------------------------


def test_rt1_set_get_and_watch(backend: Any) -> None:
    watch = primed_watch(backend, "contract-task")
    error = TaskError(type="ContractError", message="boom", retryable=True, meta={"code": 42})
    backend.set(
        "contract-task",
        TaskState.SUCCEEDED,
        payload={"value": "done"},
        error=error,
        attempt=3,
        meta=meta(origin="contract"),
    )

    status = backend.get("contract-task")
    assert status is not None
    assert status.id == "contract-task"
    assert status.state is TaskState.SUCCEEDED
    assert status.payload == {"value": "done"}
    assert status.error is not None
    assert status.error.type == "ContractError"
    assert status.error.message == "boom"
    assert status.error.retryable is True
    assert status.error.meta == {"code": 42}
    assert status.attempt == 3
    assert status.meta["origin"] == "contract"

    seen = real(watch)
    assert [(s.id, s.state) for s in seen] == [("contract-task", TaskState.SUCCEEDED)]


def test_get_of_an_unknown_task_is_none(backend: Any) -> None:
    assert backend.get("never-written") is None


@pytest.mark.parametrize(
    "payload",
    [
        "done",
        7,
        3.5,
        True,
        None,
        [1, "two", None],
        {"nested": {"list": [1, 2], "empty": {}}},
        # Looks like the Dart adapter's internal scalar wrapping; must still come back as is.
        {"__wrapped_scalar__": True, "value": 1},
    ],
    ids=["str", "int", "float", "bool", "none", "list", "dict", "wrapper-lookalike"],
)
def test_json_payloads_round_trip(backend: Any, payload: Any) -> None:
    backend.set("payload-task", TaskState.SUCCEEDED, payload=payload, meta=meta())
    status = backend.get("payload-task")
    assert status is not None
    assert status.payload == payload
    assert type(status.payload) is type(payload)


def test_rt2_expire_removes_status_after_ttl(quiet_backend: Any) -> None:
    quiet_backend.set("expiring", TaskState.SUCCEEDED, payload={"v": 1}, meta=meta())
    quiet_backend.expire("expiring", 0.3)
    assert quiet_backend.get("expiring") is not None, "expire() must not remove the record at once"
    time.sleep(0.45)  # past the TTL: proving expiry
    assert quiet_backend.get("expiring") is None


def test_expire_of_a_missing_task_creates_nothing(backend: Any) -> None:
    backend.expire("ghost", 60)
    assert backend.get("ghost") is None
    assert backend.count_task_statuses() == 0


def test_rt3_set_honours_a_shorter_ttl(quiet_backend: Any) -> None:
    quiet_backend.set("short", TaskState.SUCCEEDED, meta=meta(), ttl=0.3)
    quiet_backend.set("short-td", TaskState.SUCCEEDED, meta=meta(), ttl=timedelta(milliseconds=300))
    quiet_backend.set("default", TaskState.SUCCEEDED, meta=meta())  # the fixture's 1 s
    assert quiet_backend.get("short") is not None
    assert quiet_backend.get("short-td") is not None
    time.sleep(0.45)  # past the TTL: proving expiry
    assert quiet_backend.get("short") is None
    assert quiet_backend.get("short-td") is None
    assert quiet_backend.get("default") is not None


def test_set_honours_a_longer_ttl_than_the_default(engine: Any) -> None:
    with engine.backend(default_ttl=0.3, cleanup_interval=3600) as backend:
        backend.set("long", TaskState.SUCCEEDED, meta=meta(), ttl=30)
        backend.set("default", TaskState.SUCCEEDED, meta=meta())
        time.sleep(0.45)  # past the default TTL
        assert backend.get("default") is None, "the default TTL did not apply"
        assert backend.get("long") is not None


def test_expire_can_lengthen_the_life_of_a_record(engine: Any) -> None:
    with engine.backend(default_ttl=0.3, cleanup_interval=3600) as backend:
        backend.set("kept", TaskState.SUCCEEDED, meta=meta())
        backend.set("control", TaskState.SUCCEEDED, meta=meta())
        backend.expire("kept", 30)
        time.sleep(0.45)  # past the default TTL
        assert backend.get("control") is None, "the default TTL did not apply"
        assert backend.get("kept") is not None


def test_every_set_restarts_the_ttl(engine: Any) -> None:
    with engine.backend(default_ttl=0.6, cleanup_interval=3600) as backend:
        backend.set("renewed", TaskState.RUNNING, meta=meta())
        time.sleep(0.35)
        backend.set("renewed", TaskState.SUCCEEDED, meta=meta())
        time.sleep(0.35)  # 0.7 s after the first write, 0.35 s after the second
        status = backend.get("renewed")
        assert status is not None and status.state is TaskState.SUCCEEDED


def test_rt4_set_overwrites_and_clears_the_error(backend: Any) -> None:
    backend.set(
        "overwrite",
        TaskState.FAILED,
        payload={"partial": True},
        error=TaskError(type="Boom", message="first try"),
        attempt=1,
        meta=meta(phase="failed", only_first=1),
    )
    backend.set(
        "overwrite",
        TaskState.SUCCEEDED,
        payload={"value": "ok"},
        attempt=2,
        meta=meta(phase="success"),
    )
    status = backend.get("overwrite")
    assert status is not None
    assert status.state is TaskState.SUCCEEDED
    assert status.error is None
    assert status.attempt == 2
    assert status.payload == {"value": "ok"}
    assert status.meta == meta(phase="success"), "set() must replace the meta, not merge it"


def test_rt5_watch_yields_back_to_back_writes_in_order_and_ends(backend: Any) -> None:
    started = time.monotonic()
    watch = primed_watch(backend, "sequential", timeout=20)
    backend.set("sequential", TaskState.RUNNING, attempt=1, meta=meta(step=1))
    backend.set("sequential", TaskState.SUCCEEDED, payload=5, attempt=1, meta=meta(step=2))

    seen: list[TaskStatus] = []
    for status in watch:
        seen.append(status)
        if status.state is TaskState.SUCCEEDED:
            break
    assert [(s.state, s.meta.get("step")) for s in real(seen)] == [
        (TaskState.RUNNING, 1),
        (TaskState.SUCCEEDED, 2),
    ]
    assert real(seen)[-1].payload == 5

    # After the terminal state the watch is over: a later write is not reported.
    backend.set("sequential", TaskState.RETRIED, meta=meta(step=3))
    assert next(watch, None) is None
    assert time.monotonic() - started < 10, "the watch ran until its timeout"


def test_watch_does_not_replay_the_current_status(backend: Any) -> None:
    backend.set("already", TaskState.RUNNING, meta=meta())
    assert list(backend.watch("already", timeout=0.3)) == []


def test_watch_with_timeout_ends_when_nothing_happens(backend: Any) -> None:
    started = time.monotonic()
    assert list(backend.watch("quiet", timeout=0.3)) == []
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 5


def test_watch_reports_non_terminal_writes_and_still_ends_at_timeout(backend: Any) -> None:
    watch = primed_watch(backend, "non-terminal", timeout=1.5)
    backend.set("non-terminal", TaskState.RUNNING, meta=meta())
    started = time.monotonic()
    seen = real(watch)
    assert [s.state for s in seen] == [TaskState.RUNNING]
    assert time.monotonic() - started < 5


def test_several_watchers_of_one_task_all_see_every_write(backend: Any) -> None:
    first = primed_watch(backend, "shared")
    second = primed_watch(backend, "shared")
    backend.set("shared", TaskState.RUNNING, meta=meta())
    backend.set("shared", TaskState.FAILED, error=TaskError("E", "x"), meta=meta())
    expected = [TaskState.RUNNING, TaskState.FAILED]
    assert [s.state for s in real(first)] == expected
    assert [s.state for s in real(second)] == expected


# -- a late "queued" write never replaces a newer state ---------------------------------------


@pytest.mark.parametrize("newer", [TaskState.RUNNING, TaskState.SUCCEEDED])
def test_queued_never_replaces_a_newer_live_state(backend: Any, newer: TaskState) -> None:
    backend.set("raced", newer, payload={"by": "worker"}, attempt=1, meta=meta(worker="w1"))
    backend.set("raced", TaskState.QUEUED, meta=meta(queue="default"))
    status = backend.get("raced")
    assert status is not None
    assert status.state is newer
    assert status.payload == {"by": "worker"}
    assert status.attempt == 1
    assert status.meta.get("worker") == "w1"


def test_queued_creates_the_record_when_none_exists(backend: Any) -> None:
    backend.set("fresh", TaskState.QUEUED, meta=meta(queue="default"))
    status = backend.get("fresh")
    assert status is not None
    assert status.state is TaskState.QUEUED
    assert status.meta["queue"] == "default"


def test_queued_replaces_an_earlier_queued_record(backend: Any) -> None:
    backend.set("requeued", TaskState.QUEUED, meta=meta(queue="a"))
    backend.set("requeued", TaskState.QUEUED, meta=meta(queue="b"))
    status = backend.get("requeued")
    assert status is not None and status.meta["queue"] == "b"


def test_queued_replaces_an_expired_record(quiet_backend: Any) -> None:
    quiet_backend.set("old-run", TaskState.SUCCEEDED, payload={"old": True}, meta=meta(), ttl=0.3)
    time.sleep(0.45)  # past the TTL
    assert quiet_backend.get("old-run") is None
    quiet_backend.set("old-run", TaskState.QUEUED, meta=meta(queue="default"))
    status = quiet_backend.get("old-run")
    assert status is not None
    assert status.state is TaskState.QUEUED
    assert status.payload is None


# -- listing and counting ----------------------------------------------------------------------


def _seed_for_filters(backend: Any) -> None:
    backend.set("f-1", TaskState.SUCCEEDED, meta=meta(queue="emails", tenant="acme", n=1))
    backend.set("f-2", TaskState.FAILED, meta=meta(queue="emails", tenant="umbrella"))
    backend.set("f-3", TaskState.SUCCEEDED, meta=meta(queue="reports", n=2))
    backend.set("f-4", TaskState.RUNNING, meta=meta(tenant="acme"))
    backend.set("f-gone", TaskState.SUCCEEDED, meta=meta(queue="emails", tenant="acme"))
    backend.expire("f-gone", 0)  # expired: never listed or counted


def test_list_filters_by_state(backend: Any) -> None:
    _seed_for_filters(backend)
    assert sorted(ids(backend.list_task_statuses(state=TaskState.SUCCEEDED))) == ["f-1", "f-3"]
    assert sorted(ids(backend.list_task_statuses(state="failed"))) == ["f-2"]
    assert ids(backend.list_task_statuses(state=TaskState.CANCELLED)) == []


def test_list_filters_by_queue_from_meta(backend: Any) -> None:
    _seed_for_filters(backend)
    assert sorted(ids(backend.list_task_statuses(queue="emails"))) == ["f-1", "f-2"]
    assert ids(backend.list_task_statuses(queue="reports")) == ["f-3"]
    assert ids(backend.list_task_statuses(queue="nowhere")) == []


def test_list_meta_filter_none_means_key_present(backend: Any) -> None:
    _seed_for_filters(backend)
    assert sorted(ids(backend.list_task_statuses(meta={"tenant": None}))) == ["f-1", "f-2", "f-4"]
    assert sorted(ids(backend.list_task_statuses(meta={"n": None}))) == ["f-1", "f-3"]
    assert ids(backend.list_task_statuses(meta={"absent": None})) == []


def test_list_meta_filter_requires_equality(backend: Any) -> None:
    _seed_for_filters(backend)
    assert sorted(ids(backend.list_task_statuses(meta={"tenant": "acme"}))) == ["f-1", "f-4"]
    assert ids(backend.list_task_statuses(meta={"n": 2})) == ["f-3"]
    assert ids(backend.list_task_statuses(meta={"tenant": "nobody"})) == []
    # Filters combine: all of them must match.
    assert ids(
        backend.list_task_statuses(state="succeeded", queue="emails", meta={"tenant": "acme"})
    ) == ["f-1"]
    assert ids(backend.list_task_statuses(meta={"tenant": "acme", "n": None})) == ["f-1"]


def test_list_orders_newest_update_first(backend: Any) -> None:
    # Written a, b, c; then a is updated again. Ids tie-break alphabetically, so a
    # backend that ignored update times would return a, b, c.
    for task_id in ("order-a", "order-b", "order-c"):
        backend.set(task_id, TaskState.RUNNING, meta=meta())
        let_clock_move()
    backend.set("order-a", TaskState.SUCCEEDED, meta=meta())

    page = backend.list_task_statuses()
    assert ids(page) == ["order-a", "order-c", "order-b"]
    updated = [item.updated_at for item in page.items]
    assert updated == sorted(updated, reverse=True)
    assert all(item.updated_at.tzinfo is not None for item in page.items)
    record_a = page.items[0]
    assert record_a.status.state is TaskState.SUCCEEDED
    assert record_a.created_at < record_a.updated_at, "an update must keep created_at"


def test_list_pages_with_next_offset(backend: Any) -> None:
    written = [f"page-{n}" for n in range(5)]
    for task_id in written:
        backend.set(task_id, TaskState.SUCCEEDED, meta=meta())
        let_clock_move()
    newest_first = list(reversed(written))

    first = backend.list_task_statuses(limit=2)
    assert ids(first) == newest_first[:2]
    assert first.next_offset == 2
    second = backend.list_task_statuses(limit=2, offset=first.next_offset)
    assert ids(second) == newest_first[2:4]
    assert second.next_offset == 4
    last = backend.list_task_statuses(limit=2, offset=second.next_offset)
    assert ids(last) == newest_first[4:]
    assert last.next_offset is None

    exact = backend.list_task_statuses(limit=5)
    assert ids(exact) == newest_first
    assert exact.next_offset is None, "no next page when nothing is left"
    assert backend.list_task_statuses(limit=5, offset=5).items == []


@pytest.mark.parametrize("limit", [0, -1])
def test_list_with_limit_zero_or_less_is_an_empty_page(backend: Any, limit: int) -> None:
    backend.set("exists", TaskState.SUCCEEDED, meta=meta())
    page = backend.list_task_statuses(limit=limit)
    assert page.items == []
    assert page.next_offset is None


def test_count_task_statuses(backend: Any) -> None:
    assert backend.count_task_statuses() == 0
    _seed_for_filters(backend)
    assert backend.count_task_statuses() == 4, "expired records must not be counted"
    assert backend.count_task_statuses(state=TaskState.SUCCEEDED) == 2
    assert backend.count_task_statuses(state="running") == 1
    assert backend.count_task_statuses(queue="emails") == 2
    assert backend.count_task_statuses(state="failed", queue="emails") == 1
    assert backend.count_task_statuses(state="failed", queue="reports") == 0


# -- wait() ---------------------------------------------------------------------------------


@pytest.mark.parametrize("terminal", [TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED])
def test_wait_returns_the_terminal_status(backend: Any, terminal: TaskState) -> None:
    backend.set("waited", TaskState.QUEUED, meta=meta())

    def worker() -> None:
        backend.set("waited", TaskState.RUNNING, meta=meta())
        backend.set("waited", TaskState.RETRIED, attempt=0, meta=meta())
        backend.set("waited", TaskState.RUNNING, attempt=1, meta=meta())
        backend.set("waited", terminal, payload={"final": True}, attempt=1, meta=meta())

    # A simulated worker that finishes a little later, while wait() is waiting.
    timer = threading.Timer(0.1, worker)
    timer.start()
    try:
        status = backend.wait("waited", timeout=10)
    finally:
        timer.join()
    assert status.state is terminal
    assert status.payload == {"final": True}
    assert status.attempt == 1


@pytest.mark.parametrize("initial", [None, TaskState.RUNNING])
def test_wait_raises_result_timeout_without_a_terminal_state(
    backend: Any, initial: TaskState | None
) -> None:
    if initial is not None:
        backend.set("stuck", initial, meta=meta())
    started = time.monotonic()
    with pytest.raises(ResultTimeout) as caught:
        backend.wait("stuck", timeout=0.3)
    assert time.monotonic() - started >= 0.25
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, StemError)


def test_wait_ignores_non_terminal_writes_until_timeout(backend: Any) -> None:
    backend.set("busy", TaskState.RUNNING, meta=meta())
    timer = threading.Timer(0.05, lambda: backend.set("busy", TaskState.RETRIED, meta=meta()))
    timer.start()
    try:
        with pytest.raises(ResultTimeout):
            backend.wait("busy", timeout=0.4)
    finally:
        timer.join()


def test_wait_returns_at_once_when_already_terminal(backend: Any) -> None:
    backend.set("finished", TaskState.SUCCEEDED, payload=[1, 2], meta=meta())
    started = time.monotonic()
    status = backend.wait("finished", timeout=10)
    assert time.monotonic() - started < 2
    assert status.state is TaskState.SUCCEEDED
    assert status.payload == [1, 2]
    assert backend.wait("finished", timeout=0).state is TaskState.SUCCEEDED


# -- RT-6..RT-9, RT-14, RT-15: groups and chords --------------------------------------------------


def test_rt6_group_lifecycle(backend: Any) -> None:
    backend.init_group(
        GroupDescriptor(id="contract-group", expected=2, meta={"purpose": "contract"}, ttl=30)
    )
    group = backend.get_group("contract-group")
    assert group is not None
    assert group.expected == 2 and group.completed == 0 and not group.is_complete

    after_a = backend.add_group_result(
        "contract-group",
        TaskStatus("child-a", TaskState.SUCCEEDED, payload={"v": 1}, meta=meta()),
    )
    assert after_a is not None
    assert after_a.completed == 1
    assert not after_a.is_complete

    after_b = backend.add_group_result(
        "contract-group",
        TaskStatus(
            "child-b", TaskState.FAILED, error=TaskError("ChildError", "no"), attempt=2, meta=meta()
        ),
    )
    assert after_b is not None
    assert after_b.completed == 2
    assert after_b.is_complete

    group = backend.get_group("contract-group")
    assert group is not None
    assert set(group.results) == {"child-a", "child-b"}
    assert group.meta["purpose"] == "contract"
    assert group.results["child-a"].payload == {"v": 1}
    child_b = group.results["child-b"]
    assert child_b.state is TaskState.FAILED
    assert child_b.error is not None and child_b.error.type == "ChildError"
    assert child_b.attempt == 2

    assert (
        backend.add_group_result(
            "missing-group", TaskStatus("child-c", TaskState.SUCCEEDED, meta=meta())
        )
        is None
    )


def test_add_group_result_for_the_same_member_replaces_it(backend: Any) -> None:
    backend.init_group(GroupDescriptor(id="g-upsert", expected=2, ttl=30))
    backend.add_group_result("g-upsert", TaskStatus("m", TaskState.RUNNING, meta=meta()))
    group = backend.add_group_result(
        "g-upsert", TaskStatus("m", TaskState.SUCCEEDED, payload=1, meta=meta())
    )
    assert group is not None
    assert group.completed == 1
    assert group.results["m"].state is TaskState.SUCCEEDED


def test_add_group_result_to_a_missing_group_writes_nothing(backend: Any) -> None:
    status = TaskStatus("orphan", TaskState.SUCCEEDED, payload={"x": 1}, meta=meta())
    assert backend.add_group_result("no-such-group", status) is None
    assert backend.get_group("no-such-group") is None, "the group must not be created"
    assert backend.get("orphan") is None, "no task status may be written either"


def test_rt7_init_group_resets_existing_results(backend: Any) -> None:
    backend.init_group(GroupDescriptor(id="reset-group", expected=1, meta={"init": True}, ttl=30))
    backend.add_group_result("reset-group", TaskStatus("c1", TaskState.SUCCEEDED, meta=meta()))
    assert backend.claim_chord("reset-group", callback_task_id="cb-1") is True

    backend.init_group(GroupDescriptor(id="reset-group", expected=2, meta={"init": False}, ttl=30))
    group = backend.get_group("reset-group")
    assert group is not None
    assert group.results == {}
    assert group.expected == 2
    assert group.meta["init"] is False
    assert "stem.chord.claimed" not in group.meta
    assert backend.claim_chord("reset-group", callback_task_id="cb-2") is True, (
        "a re-initialised group starts unclaimed"
    )


def test_rt8_group_data_expires_after_ttl(quiet_backend: Any) -> None:
    quiet_backend.init_group(GroupDescriptor(id="short-group", expected=2, ttl=0.3))
    assert (
        quiet_backend.add_group_result(
            "short-group", TaskStatus("first", TaskState.SUCCEEDED, meta=meta())
        )
        is not None
    )
    time.sleep(0.45)  # past the group TTL
    assert quiet_backend.get_group("short-group") is None
    late = TaskStatus("late", TaskState.SUCCEEDED, meta=meta())
    assert quiet_backend.add_group_result("short-group", late) is None
    assert quiet_backend.get_group("short-group") is None, "a late result must not revive the group"
    assert quiet_backend.get("late") is None


def test_group_default_ttl_applies(engine: Any) -> None:
    with engine.backend(group_default_ttl=0.3, cleanup_interval=3600) as backend:
        backend.init_group(GroupDescriptor(id="default-ttl-group", expected=1))
        assert backend.get_group("default-ttl-group") is not None
        time.sleep(0.45)  # past the group TTL
        assert backend.get_group("default-ttl-group") is None


def test_group_results_come_in_member_order(backend: Any) -> None:
    # Neither the alphabetical order of the ids nor the arrival order is the member order.
    members = ["z-first", "a-second", "m-third"]
    backend.init_group(GroupDescriptor(id="ordered", expected=3, ttl=30))
    returned = None
    for index in reversed(range(3)):
        status = TaskStatus(
            members[index],
            TaskState.SUCCEEDED,
            payload={"i": index},
            meta=meta(**{GROUP_INDEX: index}),
        )
        returned = backend.add_group_result("ordered", status)
        let_clock_move(2)
    assert returned is not None
    assert list(returned.results) == members
    group = backend.get_group("ordered")
    assert group is not None
    assert list(group.results) == members
    assert [s.payload["i"] for s in group.results.values()] == [0, 1, 2]


def test_rt9_claim_chord_allows_a_single_claimant(backend: Any) -> None:
    backend.init_group(
        GroupDescriptor(id="chord-group", expected=1, meta={"purpose": "chord"}, ttl=30)
    )
    dispatched_at = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert (
        backend.claim_chord("chord-group", callback_task_id="cb-task", dispatched_at=dispatched_at)
        is True
    )
    assert backend.claim_chord("chord-group") is False
    assert backend.claim_chord("chord-group", callback_task_id="cb-other") is False

    group = backend.get_group("chord-group")
    assert group is not None
    assert group.meta["stem.chord.claimed"] is True
    assert group.meta["stem.chord.callbackTaskId"] == "cb-task"
    stamp = group.meta["stem.chord.dispatchedAt"]
    assert isinstance(stamp, str)
    assert parse_iso(stamp) == dispatched_at
    assert group.meta["purpose"] == "chord", "claiming must keep the group's other meta"


def test_claim_chord_lets_only_the_winning_member_claim_again(backend: Any) -> None:
    """A member that claimed and then crashed before publishing the callback runs
    again with the same task id: it must be able to finish the dispatch; no other
    member may, and a claim without ``claimed_by`` never matches."""
    backend.init_group(GroupDescriptor(id="resume-group", expected=2, ttl=30))
    assert backend.claim_chord("resume-group", callback_task_id="cb", claimed_by="m-1")
    assert backend.claim_chord("resume-group", callback_task_id="cb", claimed_by="m-2") is False
    assert backend.claim_chord("resume-group", callback_task_id="cb") is False
    assert backend.claim_chord("resume-group", callback_task_id="cb", claimed_by="m-1") is True
    group = backend.get_group("resume-group")
    assert group is not None
    assert group.meta["stem.chord.claimedBy"] == "m-1"


def test_claim_chord_without_a_claimant_adds_no_claimant_key(backend: Any) -> None:
    backend.init_group(GroupDescriptor(id="plain-claim", expected=1, ttl=30))
    assert backend.claim_chord("plain-claim", callback_task_id="cb") is True
    group = backend.get_group("plain-claim")
    assert group is not None
    assert "stem.chord.claimedBy" not in group.meta


def test_claim_chord_on_a_missing_group_is_false(backend: Any) -> None:
    assert backend.claim_chord("no-such-group", callback_task_id="cb") is False
    assert backend.get_group("no-such-group") is None


def test_claim_chord_on_an_expired_group_is_false(quiet_backend: Any) -> None:
    quiet_backend.init_group(GroupDescriptor(id="expired-chord", expected=1, ttl=0.3))
    time.sleep(0.45)  # past the group TTL
    assert quiet_backend.claim_chord("expired-chord", callback_task_id="cb") is False


def test_rt14_encoder_meta_survives_status_and_group_storage(backend: Any) -> None:
    child_meta = meta(origin="contract")
    backend.set("encoded", TaskState.SUCCEEDED, payload={"value": 1}, meta=child_meta)
    status = backend.get("encoded")
    assert status is not None
    assert status.meta["__stemResultEncoder"] == "json"
    assert status.meta["origin"] == "contract"

    backend.init_group(GroupDescriptor(id="encoded-group", expected=1, ttl=30))
    group = backend.add_group_result(
        "encoded-group", TaskStatus("encoded-child", TaskState.SUCCEEDED, "done", meta=child_meta)
    )
    assert group is not None
    child = group.results["encoded-child"]
    assert child.payload == "done"
    assert child.meta["__stemResultEncoder"] == "json"
    assert child.meta["origin"] == "contract"
    stored = backend.get_group("encoded-group")
    assert stored is not None
    assert stored.results["encoded-child"].payload == "done"
    assert stored.results["encoded-child"].meta == child_meta


def test_rt15_group_results_keep_typed_payloads_and_encoder(backend: Any) -> None:
    backend.init_group(GroupDescriptor(id="typed-group", expected=2, ttl=30))
    for task_id, value in (("t-42", 42), ("t-7", 7)):
        backend.add_group_result(
            "typed-group",
            TaskStatus(task_id, TaskState.SUCCEEDED, payload={"value": value}, meta=meta()),
        )
    group = backend.get_group("typed-group")
    assert group is not None
    assert sorted(s.payload["value"] for s in group.results.values()) == [7, 42]
    assert all(s.meta["__stemResultEncoder"] == "json" for s in group.results.values())


# -- RT-10..RT-12: worker heartbeats --------------------------------------------------------------


def test_rt10_worker_heartbeats_are_stored_and_listed(backend: Any) -> None:
    backend.set_worker_heartbeat(heartbeat("worker-b", key="value"))
    backend.set_worker_heartbeat(heartbeat("worker-a"))
    stored = backend.get_worker_heartbeat("worker-b")
    assert stored is not None
    assert stored.worker_id == "worker-b"
    assert [q["name"] for q in stored.queues] == ["default"]
    assert stored.extras == {"key": "value"}
    assert stored.inflight == 0
    assert stored.concurrency == 1
    assert stored.timestamp == datetime(2025, 3, 4, 5, 6, 7, 250000, tzinfo=UTC)
    assert [hb.worker_id for hb in backend.list_worker_heartbeats()] == ["worker-a", "worker-b"]
    assert backend.get_worker_heartbeat("worker-unknown") is None


def test_rt11_worker_heartbeats_update_existing_entries(backend: Any) -> None:
    backend.set_worker_heartbeat(heartbeat("worker-1", key="value"))
    backend.set_worker_heartbeat(heartbeat("worker-1", inflight=3, version=2))
    stored = backend.get_worker_heartbeat("worker-1")
    assert stored is not None
    assert stored.inflight == 3
    assert stored.extras == {"version": 2}
    assert [hb.worker_id for hb in backend.list_worker_heartbeats()] == ["worker-1"]


def test_rt12_worker_heartbeats_expire_after_ttl(engine: Any) -> None:
    with engine.backend(heartbeat_ttl=0.3, cleanup_interval=3600) as backend:
        backend.set_worker_heartbeat(heartbeat("worker-expiring"))
        assert backend.get_worker_heartbeat("worker-expiring") is not None
        time.sleep(0.45)  # past the heartbeat TTL
        assert backend.get_worker_heartbeat("worker-expiring") is None
        assert "worker-expiring" not in [hb.worker_id for hb in backend.list_worker_heartbeats()]


# -- cleanup, namespaces, close -------------------------------------------------------------------


def test_run_cleanup_removes_expired_statuses_and_counts_them(engine: Any) -> None:
    with engine.backend(cleanup_interval=3600) as backend:
        for n in range(3):
            backend.set(f"dead-{n}", TaskState.SUCCEEDED, meta=meta(), ttl=0.3)
        backend.set("alive", TaskState.SUCCEEDED, meta=meta(), ttl=30)
        time.sleep(0.45)  # past the TTL
        assert backend.run_cleanup() == 3
        assert backend.run_cleanup() == 0
        assert backend.get("alive") is not None
        assert backend.count_task_statuses() == 1


def test_run_cleanup_removes_expired_groups_and_heartbeats(engine: Any) -> None:
    with engine.backend(cleanup_interval=3600, heartbeat_ttl=0.3) as backend:
        backend.init_group(GroupDescriptor(id="dead-group", expected=2, ttl=0.3))
        for child in ("c1", "c2"):
            backend.add_group_result("dead-group", TaskStatus(child, TaskState.SUCCEEDED))
        backend.init_group(GroupDescriptor(id="live-group", expected=1, ttl=30))
        backend.add_group_result("live-group", TaskStatus("c3", TaskState.SUCCEEDED))
        backend.set_worker_heartbeat(heartbeat("dead-worker"))
        time.sleep(0.45)  # past the TTLs
        # One group row, its two member results and one heartbeat.
        assert backend.run_cleanup() == 4
        assert backend.run_cleanup() == 0
        live = backend.get_group("live-group")
        assert live is not None and list(live.results) == ["c3"]


def test_namespaces_are_isolated(engine: Any) -> None:
    with engine.backend(namespace="a") as a, engine.backend(namespace="b") as b:
        a.set("same-id", TaskState.SUCCEEDED, payload="from a", meta=meta(queue="q"))
        assert b.get("same-id") is None
        b.set("same-id", TaskState.FAILED, payload="from b", meta=meta(queue="q"))
        a_status, b_status = a.get("same-id"), b.get("same-id")
        assert a_status is not None and a_status.payload == "from a"
        assert b_status is not None and b_status.payload == "from b"
        assert ids(a.list_task_statuses()) == ["same-id"]
        assert a.count_task_statuses(queue="q") == 1
        assert a.count_task_statuses(state="failed") == 0

        b.expire("same-id", 0)
        assert a.get("same-id") is not None, "expire() in b must not touch a"

        a.init_group(GroupDescriptor(id="g", expected=1, ttl=30))
        assert b.get_group("g") is None
        assert b.add_group_result("g", TaskStatus("m", TaskState.SUCCEEDED)) is None
        assert b.claim_chord("g") is False
        assert a.claim_chord("g") is True

        a.set_worker_heartbeat(heartbeat("w"))
        assert b.get_worker_heartbeat("w") is None
        assert b.list_worker_heartbeats() == []


def test_close_is_idempotent_and_leaves_other_backends_working(engine: Any) -> None:
    keeper = engine.backend()
    try:
        closing = engine.backend()
        closing.set("before-close", TaskState.SUCCEEDED, meta=meta())
        closing.close()
        closing.close()
        with engine.backend() as as_context:
            pass
        as_context.close()
        # The other backend on the same file must still read and write.
        keeper.set("after-close", TaskState.SUCCEEDED, meta=meta())
        assert keeper.get("before-close") is not None
        assert keeper.get("after-close") is not None
    finally:
        keeper.close()


def test_close_ends_a_suspended_watch(engine: Any) -> None:
    backend = engine.backend()
    try:
        watch = primed_watch(backend, "suspended-watch", timeout=30)
        backend.set("suspended-watch", TaskState.RUNNING, meta=meta())
        assert next(s for s in watch if not s.meta.get(PRIMER)).state is TaskState.RUNNING
    finally:
        backend.close()
    try:
        rest = real(watch)
    except StemError as exc:
        pytest.fail(f"iterating a watch after close() raised instead of ending: {exc!r}")
    assert rest == []


def test_close_ends_a_watch_in_progress(engine: Any) -> None:
    backend = engine.backend()
    outcome: dict[str, Any] = {}
    listening = threading.Event()

    def watcher() -> None:
        try:
            watch = primed_watch(backend, "closing-watch", timeout=30)
            listening.set()
            outcome["statuses"] = real(watch)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            outcome["error"] = exc
            listening.set()

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    try:
        assert listening.wait(10)
    finally:
        backend.close()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the watch kept running after close()"
    assert "error" not in outcome, f"the watch raised after close(): {outcome.get('error')!r}"
    assert outcome["statuses"] == []


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("payload", {"fine": 1, "not_json_here": object()}, "not_json_here"),
        ("payload", {"ratio": float("nan")}, "ratio"),
        ("meta", {**ENCODER, "when_started": datetime.now(UTC)}, "when_started"),
        ("error", TaskError("E", "m", meta={"bad_error_meta": {1, 2}}), "bad_error_meta"),
    ],
    ids=["payload-object", "payload-nan", "meta-datetime", "error-meta-set"],
)
def test_non_json_values_raise_type_error_naming_the_key_and_store_nothing(
    backend: Any, field: str, value: Any, key: str
) -> None:
    with pytest.raises(TypeError, match=key):
        backend.set("bad-new", TaskState.SUCCEEDED, **{field: value})
    assert backend.get("bad-new") is None

    backend.set("bad-existing", TaskState.RUNNING, payload={"kept": True}, meta=meta(v=1))
    with pytest.raises(TypeError, match=key):
        backend.set("bad-existing", TaskState.SUCCEEDED, **{field: value})
    status = backend.get("bad-existing")
    assert status is not None
    assert status.state is TaskState.RUNNING
    assert status.payload == {"kept": True}
    assert status.meta == meta(v=1)


def test_non_json_group_result_raises_type_error_and_stores_nothing(backend: Any) -> None:
    backend.init_group(GroupDescriptor(id="bad-group", expected=2, ttl=30))
    bad = TaskStatus("bad-member", TaskState.SUCCEEDED, payload={"odd_value": object()})
    with pytest.raises(TypeError, match="odd_value"):
        backend.add_group_result("bad-group", bad)
    group = backend.get_group("bad-group")
    assert group is not None and group.results == {}


def test_unknown_state_raises_value_error(backend: Any) -> None:
    with pytest.raises(ValueError, match="finished"):
        backend.set("bad-state", "finished")
    assert backend.get("bad-state") is None
    with pytest.raises(ValueError):
        backend.list_task_statuses(state="finished")
    with pytest.raises(ValueError):
        backend.count_task_statuses(state="finished")


def test_naive_dispatched_at_is_rejected_and_claims_nothing(backend: Any) -> None:
    backend.init_group(GroupDescriptor(id="naive-chord", expected=1, ttl=30))
    naive = datetime(2025, 1, 2, 3, 4, 5)
    with pytest.raises(ValueError):
        backend.claim_chord("naive-chord", callback_task_id="cb", dispatched_at=naive)
    assert backend.claim_chord("naive-chord", callback_task_id="cb") is True


# -- across OS processes (A-7, X-8, A-10, X-6) ----------------------------------------------------
#
# The children are started with the "spawn" context (a fresh interpreter, no inherited
# connection) and open the backend through the same engine object.


def _write_running_until_seen_then_succeed(engine: Any, task_id: str, seen: Any) -> None:
    with engine.backend() as backend:
        deadline = time.monotonic() + 20
        attempt = 0
        while not seen.is_set() and time.monotonic() < deadline:
            backend.set(task_id, TaskState.RUNNING, attempt=attempt, meta=meta(pid=os.getpid()))
            attempt += 1
            seen.wait(0.05)
        backend.set(task_id, TaskState.SUCCEEDED, payload={"pid": os.getpid()}, meta=meta())


def _finish_after_go(engine: Any, task_id: str, go: Any) -> None:
    with engine.backend() as backend:
        backend.set(task_id, TaskState.RUNNING, meta=meta(pid=os.getpid()))
        if not go.wait(20):
            return
        time.sleep(0.2)  # a short "task", so that the parent is already inside wait()
        backend.set(task_id, TaskState.SUCCEEDED, payload={"pid": os.getpid()}, meta=meta())


def _claim_in_rounds(
    engine: Any, group_ids: list[str], barrier: Any, outbox: Any, index: int
) -> None:
    claims: list[tuple[str, bool]] = []
    try:
        with engine.backend() as backend:
            for group_id in group_ids:
                group = backend.get_group(group_id)  # what a worker does before claiming
                assert group is not None, f"group {group_id} is missing in process {index}"
                barrier.wait(timeout=30)
                won = backend.claim_chord(
                    group_id, callback_task_id=f"cb-{index}", dispatched_at=datetime.now(UTC)
                )
                claims.append((group_id, won))
        outbox.put((index, claims, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        barrier.abort()
        outbox.put((index, claims, f"{type(exc).__name__}: {exc}"))


def _collect(outbox: Any, processes: list[Any], count: int, timeout: float) -> list[Any]:
    """Read ``count`` reports, giving up early when every child has exited."""
    reports: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(reports) < count and time.monotonic() < deadline:
        try:
            reports.append(outbox.get(timeout=0.1))
        except queue_module.Empty:
            if all(p.exitcode is not None for p in processes) and outbox.empty():
                break
    return reports


class TestAcrossProcesses:
    CLAIMANTS = 4
    ROUNDS = 4

    def test_a7_watch_sees_statuses_written_by_another_process(
        self, engine: Any, backend: Any
    ) -> None:
        context = multiprocessing.get_context("spawn")
        seen = context.Event()
        child = context.Process(
            target=_write_running_until_seen_then_succeed,
            args=(engine, "xp-watch", seen),
            daemon=True,
        )
        watch = backend.watch("xp-watch", timeout=10)
        child.start()
        try:
            first = next(watch, None)
            assert first is not None, "watch() never saw the other process's writes"
            assert first.state is TaskState.RUNNING
            assert first.meta["pid"] == child.pid
            seen.set()
            rest = list(watch)
        finally:
            seen.set()
            child.join(timeout=10)
        assert child.exitcode == 0
        assert rest, "watch() did not see the terminal write of the other process"
        assert rest[-1].state is TaskState.SUCCEEDED
        assert rest[-1].payload == {"pid": child.pid}
        assert all(s.state is TaskState.RUNNING for s in rest[:-1])

    def test_wait_sees_a_terminal_state_written_by_another_process(
        self, engine: Any, backend: Any
    ) -> None:
        context = multiprocessing.get_context("spawn")
        go = context.Event()
        child = context.Process(target=_finish_after_go, args=(engine, "xp-wait", go), daemon=True)
        child.start()
        try:
            wait_for(
                lambda: (s := backend.get("xp-wait")) is not None and s.state is TaskState.RUNNING,
                timeout=20,
                message="the child process never wrote 'running'",
            )
            go.set()
            started = time.monotonic()
            status = backend.wait("xp-wait", timeout=15)
            waited = time.monotonic() - started
        finally:
            go.set()
            child.join(timeout=10)
        assert child.exitcode == 0
        assert status.state is TaskState.SUCCEEDED
        assert status.payload == {"pid": child.pid}
        # Loose bound: only a wait() blind to other processes would run to its timeout.
        assert waited < 8, f"wait() took {waited:.1f}s to see the other process's result"

    def test_a10_claim_chord_has_exactly_one_winner_across_processes(
        self, engine: Any, backend: Any
    ) -> None:
        group_ids = [f"xp-chord-{n}" for n in range(self.ROUNDS)]
        for group_id in group_ids:
            backend.init_group(GroupDescriptor(id=group_id, expected=1, ttl=60))
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(self.CLAIMANTS)
        outbox = context.Queue()
        children = [
            context.Process(
                target=_claim_in_rounds,
                args=(engine, group_ids, barrier, outbox, index),
                daemon=True,
            )
            for index in range(self.CLAIMANTS)
        ]
        for child in children:
            child.start()
        try:
            reports = _collect(outbox, children, self.CLAIMANTS, timeout=40)
        finally:
            for child in children:
                child.join(timeout=10)
                if child.is_alive():
                    child.terminate()
                    child.join(timeout=5)

        errors = [(index, error) for index, _, error in reports if error]
        assert errors == [], f"claim_chord raised in a child process: {errors}"
        assert len(reports) == self.CLAIMANTS, "a child process did not report"
        assert [child.exitcode for child in children] == [0] * self.CLAIMANTS

        for group_id in group_ids:
            outcomes = {
                index: won for index, claims, _ in reports for gid, won in claims if gid == group_id
            }
            assert len(outcomes) == self.CLAIMANTS
            winners = [index for index, won in outcomes.items() if won is True]
            losers = [index for index, won in outcomes.items() if won is False]
            assert len(winners) == 1, f"{group_id}: winners {winners}, outcomes {outcomes}"
            assert len(losers) == self.CLAIMANTS - 1
            group = backend.get_group(group_id)
            assert group is not None
            assert group.meta["stem.chord.claimed"] is True
            assert group.meta["stem.chord.callbackTaskId"] == f"cb-{winners[0]}"


# -- set_many: the worker's batched status writes --------------------------------------


def test_set_many_applies_writes_in_order_with_the_fencing_of_set(backend: Any) -> None:
    backend.set("owned", TaskState.RUNNING, meta=ENCODER, owner="lease-new", epoch=200)
    results = backend.set_many(
        [
            StatusWrite("fresh", TaskState.RUNNING, meta=ENCODER, owner="a", epoch=1),
            StatusWrite("fresh", TaskState.SUCCEEDED, payload=7, meta=ENCODER, owner="a"),
            # A result by another lease than the one that owns the record: refused.
            StatusWrite("owned", TaskState.SUCCEEDED, payload=1, meta=ENCODER, owner="stale"),
            # A take-over by an older lease: refused too.
            StatusWrite(
                "owned", TaskState.FAILED, meta=ENCODER, owner="old", take_over=True, epoch=100
            ),
        ]
    )

    assert results == [True, True, False, False]
    fresh = backend.get("fresh")
    assert fresh is not None and fresh.state is TaskState.SUCCEEDED and fresh.payload == 7
    owned = backend.get("owned")
    assert owned is not None and owned.state is TaskState.RUNNING
    assert backend.set_many([]) == []


def test_set_many_of_one_kind_refuses_only_the_stale_write(backend: Any) -> None:
    """A worker's batch is all take-overs fenced by lease epoch: one from a lease older
    than the record's is refused alone, and the others are written."""
    backend.set("taken", TaskState.RUNNING, meta=ENCODER, owner="new", epoch=200)
    results = backend.set_many(
        [
            StatusWrite(
                "a", TaskState.SUCCEEDED, 1, meta=ENCODER, owner="l1", take_over=True, epoch=10
            ),
            StatusWrite(
                "taken",
                TaskState.SUCCEEDED,
                2,
                meta=ENCODER,
                owner="old",
                take_over=True,
                epoch=100,
            ),
            StatusWrite(
                "b", TaskState.SUCCEEDED, 3, meta=ENCODER, owner="l2", take_over=True, epoch=10
            ),
        ]
    )
    assert results == [True, False, True]
    assert [backend.get(task).payload for task in ("a", "b")] == [1, 3]
    taken = backend.get("taken")
    assert taken is not None and taken.state is TaskState.RUNNING


def test_set_many_checks_every_write_before_making_any(backend: Any) -> None:
    with pytest.raises(InvalidArgument):
        backend.set_many(
            [
                StatusWrite("first", TaskState.SUCCEEDED, meta=ENCODER),
                StatusWrite("second", TaskState.SUCCEEDED, attempt=-1, meta=ENCODER),
            ]
        )
    assert backend.get("first") is None


def test_set_many_is_seen_by_watchers(backend: Any) -> None:
    watch = primed_watch(backend, "watched", timeout=20)
    backend.set_many(
        [
            StatusWrite("watched", TaskState.RUNNING, meta=meta(step=1)),
            StatusWrite("watched", TaskState.SUCCEEDED, payload="x", meta=meta(step=2)),
        ]
    )
    seen: list[TaskStatus] = []
    for status in watch:
        seen.append(status)
        if status.state is TaskState.SUCCEEDED:
            break
    assert [s.meta.get("step") for s in real(seen)][-1] == 2
    assert real(seen)[-1].payload == "x"
