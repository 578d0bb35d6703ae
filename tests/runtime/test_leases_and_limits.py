"""Lease renewal (A-4, X-5) and time limits (contract W-7, X-14)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from stem_sqlite import TaskState
from tests.conftest import wait_for
from tests.runtime import tasks
from tests.runtime.conftest import POOLS, AppFactory, running


@pytest.mark.parametrize("pool", POOLS)
def test_a4_short_lease_is_renewed_and_never_redelivered(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app(visibility=0.5)
    sleeper = app.task(name="rt.sleeper", pool=pool)(tasks.sleeper)
    log = str(tmp_path / "runs.jsonl")

    with (
        running(app, pool=pool, concurrency=2, name="w-a"),
        running(app, pool=pool, concurrency=1, name="w-b"),
    ):
        result = sleeper.delay(log, 2.0)
        status = result.wait(timeout=20)

    assert status.state is TaskState.SUCCEEDED
    starts = [r for r in tasks.read(log) if r["event"] == "start"]
    assert len(starts) == 1, f"delivered {len(starts)} times: {starts}"
    assert app.broker.list_dead_letters("default").entries == []


@pytest.mark.parametrize("pool", POOLS)
def test_soft_time_limit_raises_inside_the_task(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    add = app.task(name="rt.add", pool=pool)(tasks.add)
    limited = app.task(name="rt.soft", pool=pool, soft_time_limit=0.3)(tasks.soft_limited)
    per_call = app.task(name="rt.soft_call", pool=pool)(tasks.soft_limited)
    log_task = str(tmp_path / "task.jsonl")
    log_call = str(tmp_path / "call.jsonl")

    with running(app, pool=pool, concurrency=1):
        assert add.delay(1, 1).get(timeout=15) == 2  # the pool process is up and serving
        by_task = limited.delay(log_task)
        by_call = per_call.apply_async(args=[log_call], soft_time_limit=0.3)
        first = by_task.wait(timeout=15)
        second = by_call.wait(timeout=15)

    for status, log in ((first, log_task), (second, log_call)):
        assert status.state is TaskState.SUCCEEDED, status.error
        assert status.payload == "cleaned up"
        events = tasks.read(log)
        assert [e["event"] for e in events] == ["start", "soft-limit"]
        assert 0.25 <= events[1]["time"] - events[0]["time"] < 5


def test_soft_time_limit_in_a_pool_process_that_is_still_starting(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """The first task of a fresh worker (or the first after a replaced process) can
    reach its soft limit before the pool process has finished starting: the limit
    must still end as SoftTimeLimitExceeded inside the body, never kill the process."""
    app = make_app()
    limited = app.task(name="rt.soft", pool="processes", soft_time_limit=0.1)(tasks.soft_limited)
    log = str(tmp_path / "task.jsonl")
    result = limited.delay(log)  # queued before the worker (and its pool) starts

    with running(app, pool="processes", concurrency=1):
        status = result.wait(timeout=15)

    assert status.state is TaskState.SUCCEEDED, status.error
    assert status.payload == "cleaned up"
    assert [e["event"] for e in tasks.read(log)] == ["start", "soft-limit"]


def test_hard_time_limit_kills_a_cpu_bound_task_in_the_process_pool(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = make_app()
    spin = app.task(name="rt.spin", pool="processes", time_limit=0.5)(tasks.spin)
    record = app.task(name="rt.record", pool="processes")(tasks.record)
    spin_log = str(tmp_path / "spin.jsonl")
    after_log = str(tmp_path / "after.jsonl")

    with running(app, pool="processes", concurrency=1):
        stuck = spin.delay(spin_log)
        after = record.delay(after_log, "after")
        status = stuck.wait(timeout=15)
        assert after.get(timeout=15) == "after"

    assert status.state is TaskState.FAILED
    assert status.error is not None and status.error.type == "TimeLimitExceeded"
    (spun,) = tasks.read(spin_log)
    (ran,) = tasks.read(after_log)
    assert ran["pid"] != spun["pid"]  # the next task ran in the replacement process

    def gone() -> bool:
        try:
            os.kill(spun["pid"], 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=5, message="the spinning pool process is still alive")


def test_hard_time_limit_per_call_in_the_process_pool(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    spin = app.task(name="rt.spin", pool="processes")(tasks.spin)
    with running(app, pool="processes"):
        status = spin.apply_async(args=[str(tmp_path / "spin.jsonl")], time_limit=0.4).wait(
            timeout=15
        )
    assert status.state is TaskState.FAILED
    assert status.error is not None and status.error.type == "TimeLimitExceeded"


def test_thread_pool_task_with_hard_limit_is_reported_at_start(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    app.task(name="rt.threaded_limited", time_limit=5)(tasks.add)
    app.task(name="rt.process_limited", pool="processes", time_limit=5)(tasks.add)
    app.task(name="rt.unlimited")(tasks.add)
    caplog.set_level(logging.INFO, logger="stem_sqlite")
    worker = running(app, pool="threads")
    with worker:
        pass
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    named = [r.getMessage() for r in warnings if "rt.threaded_limited" in r.getMessage()]
    assert named, "no start-up warning about the thread-pool task's hard time_limit"
    assert "time_limit" in named[0] or "time limit" in named[0]
    assert not [r for r in warnings if "rt.process_limited" in r.getMessage()]
    assert not [r for r in warnings if "rt.unlimited" in r.getMessage()]


@pytest.mark.parametrize("pool", POOLS)
def test_prefetched_jobs_keep_their_lease_while_they_wait(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    """A-4 with prefetch: a delivery held in the prefetch buffer while another task runs
    is still this worker's (W-16 counts it as held), so its 0.5 s lease must not lapse
    and let it be delivered a second time."""
    app = make_app(visibility=0.5)
    sleeper = app.task(name="rt.sleeper", pool=pool)(tasks.sleeper)
    logs = [str(tmp_path / f"job-{i}.jsonl") for i in range(2)]
    results = [sleeper.delay(log, 1.2) for log in logs]

    with running(app, pool=pool, concurrency=1, prefetch_multiplier=2):
        for result in results:
            assert result.wait(timeout=20).state is TaskState.SUCCEEDED

    for log in logs:
        starts = [r for r in tasks.read(log) if r["event"] == "start"]
        assert len(starts) == 1, f"{log}: the body ran {len(starts)} times"
    # Both are done: neither may be left in the queue to run yet again.
    left = [count("default") for count in (app.broker.pending_count, app.broker.inflight_count)]
    assert left == [0, 0], f"jobs left after both succeeded (pending, inflight): {left}"


def test_hard_time_limit_interrupts_python_code_in_the_thread_pool(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """The thread pool cannot kill a thread, but it does interrupt pure-Python code."""
    app = make_app()
    busy = app.task(name="rt.busy", time_limit=0.3)(tasks.busy)
    add = app.task(name="rt.add")(tasks.add)
    log = str(tmp_path / "busy.jsonl")
    with running(app, pool="threads"):
        status = busy.delay(log, 5).wait(timeout=15)
        assert add.delay(1, 2).get(timeout=10) == 3
    assert status.state is TaskState.FAILED
    assert status.error is not None and status.error.type == "TimeLimitExceeded"
    assert [e["event"] for e in tasks.read(log)] == ["start"]
