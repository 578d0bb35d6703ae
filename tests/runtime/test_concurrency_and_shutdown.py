"""Concurrency and prefetch bounds (W-16, X-16), shutdown modes (W-17, X-14) and
run(burst=True)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from stem_sqlite import RetryPolicy, TaskState
from tests.conftest import wait_for
from tests.runtime import tasks
from tests.runtime.conftest import (
    POOLS,
    AppFactory,
    max_over,
    new_worker,
    run_burst,
    running,
    stays,
)


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in events:  # an end sorts before a start at the same instant
        current += step
        best = max(best, current)
    return best


@pytest.mark.parametrize("pool", POOLS)
def test_never_more_than_concurrency_bodies_nor_prefetch_deliveries(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    interval = app.task(name="rt.interval", pool=pool)(tasks.interval)
    log = str(tmp_path / "intervals.jsonl")
    results = [interval.delay(log, f"job-{i}", 0.15) for i in range(10)]
    inflight: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            inflight.append(app.broker.inflight_count("default"))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with running(app, pool=pool, concurrency=2, prefetch_multiplier=2):
            for result in results:
                assert result.wait(timeout=20).state is TaskState.SUCCEEDED
    finally:
        done.set()
        watcher.join(5)

    spans = [(r["start"], r["end"]) for r in tasks.read(log)]
    assert len(spans) == 10
    assert _max_overlap(spans) == 2, "concurrency=2 must run two bodies at once, never more"
    assert max(inflight) <= 4, f"held {max(inflight)} deliveries with a prefetch of 4"


def test_prefetch_multiplier_one_holds_at_most_concurrency(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = make_app()
    gated = app.task(name="rt.gated", bind=True)(tasks.revocable)
    gate = tmp_path / "go"
    for i in range(6):
        gated.delay(str(tmp_path / f"{i}.jsonl"), str(gate))
    with running(app, concurrency=2, prefetch_multiplier=1):
        wait_for(lambda: app.broker.inflight_count("default") == 2, timeout=10)
        assert stays(lambda: app.broker.inflight_count("default") == 2, 0.3)
        assert app.broker.pending_count("default") == 4
        gate.touch()
        wait_for(
            lambda: app.broker.pending_count("default") + app.broker.inflight_count("default") == 0,
            timeout=15,
        )


@pytest.mark.parametrize("pool", POOLS)
def test_warm_shutdown_lets_the_running_task_finish(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    sleeper = app.task(name="rt.sleeper", pool=pool)(tasks.sleeper)
    log = str(tmp_path / "runs.jsonl")
    worker = new_worker(app, pool=pool)
    worker.start()
    try:
        running_one = sleeper.delay(log, 0.8)
        waiting = sleeper.delay(log, 0.8)
        wait_for(lambda: tasks.read(log), timeout=15)
        started = time.monotonic()
        worker.shutdown("warm")
        took = time.monotonic() - started
    finally:
        worker.shutdown("hard")

    status = running_one.status()
    assert status is not None and status.state is TaskState.SUCCEEDED
    assert status.payload == 0.8
    assert took < 5
    assert worker.join(0)  # the worker has stopped
    # The job not started yet stays queued for the next worker.
    assert waiting.status().state is TaskState.QUEUED
    assert app.broker.pending_count("default") == 1
    assert app.broker.inflight_count("default") == 0


@pytest.mark.parametrize("pool", POOLS)
def test_hard_shutdown_releases_the_running_job_at_once(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app(visibility=30)
    stubborn = app.task(name="rt.stubborn", pool=pool)(tasks.stubborn_gated)
    log = str(tmp_path / "runs.jsonl")
    gates = tmp_path / "gates"
    gates.mkdir()
    result = stubborn.delay(log, str(gates))

    first = new_worker(app, pool=pool, name="first")
    first.start()
    try:
        wait_for(lambda: tasks.read(log), timeout=15)
        started = time.monotonic()
        first.shutdown("hard")
        assert time.monotonic() - started < 3
        # Released at once, not when the 30 s lease runs out.
        assert app.broker.inflight_count("default") == 0
        assert app.broker.pending_count("default") == 1
    finally:
        first.shutdown("hard")

    with running(app, pool=pool, name="second"):
        wait_for(
            lambda: [e for e in tasks.read(log) if e["event"] == "start" and e["run"] == 2],
            timeout=15,
        )
        # let the first run's body end now (in the thread pool it is still running,
        # a process-pool child was killed). It must not settle a job it no longer holds.
        (gates / "gate.1").touch()
        if pool == "threads":
            wait_for(
                lambda: [e for e in tasks.read(log) if e["event"] == "end" and e["run"] == 1],
                timeout=10,
            )
        assert stays(
            lambda: (
                app.broker.inflight_count("default") == 1
                and result.status().state is TaskState.RUNNING
            ),
            0.3,
        )
        (gates / "gate.2").touch()
        final = result.wait(timeout=15)

    assert final.state is TaskState.SUCCEEDED
    assert final.payload == 2  # the second run's result, not the abandoned first run's
    assert app.broker.list_dead_letters("default").entries == []
    assert app.broker.pending_count("default") + app.broker.inflight_count("default") == 0


@pytest.mark.parametrize("pool", POOLS)
def test_soft_shutdown_raises_task_revoked_and_releases_the_job(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app(visibility=30)
    add = app.task(name="rt.add", pool=pool)(tasks.add)
    revocable = app.task(name="rt.revocable", bind=True, pool=pool)(tasks.revocable)
    log = str(tmp_path / "runs.jsonl")
    gate = tmp_path / "go"

    first = new_worker(app, pool=pool, name="first")
    first.start()
    try:
        assert add.delay(1, 1).get(timeout=15) == 2  # the pool is up and serving
        result = revocable.delay(log, str(gate))
        wait_for(lambda: tasks.read(log), timeout=15)
        first.shutdown("soft")
    finally:
        first.shutdown("hard")

    events = tasks.read(log)
    assert [e["event"] for e in events] == ["start", "revoked"]
    assert events[1]["is_revoked"] is True
    assert app.broker.inflight_count("default") == 0
    assert app.broker.pending_count("default") == 1
    assert app.broker.list_dead_letters("default").entries == []

    gate.touch()
    with running(app, pool=pool, name="second"):
        final = result.wait(timeout=15)
    assert final.state is TaskState.SUCCEEDED
    assert final.payload == "finished"
    events = tasks.read(log)
    assert [e["event"] for e in events] == ["start", "revoked", "start", "end"]
    assert events[3]["is_revoked"] is False  # a new run is not revoked


@pytest.mark.parametrize("pool", POOLS)
def test_burst_returns_once_everything_ran_including_a_delayed_retry(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    retry_once = app.task(name="rt.retry_once", bind=True, pool=pool, max_retries=1)(
        tasks.retry_once
    )
    add = app.task(name="rt.add", pool=pool)(tasks.add)
    fail = app.task(
        name="rt.fail", pool=pool, max_retries=1, retry_policy=RetryPolicy(default_delay=0.3)
    )(tasks.fail)
    log = str(tmp_path / "attempts.jsonl")
    retried = retry_once.delay(log, 0.5)
    plain = add.delay(1, 2)
    failing = fail.delay(str(tmp_path / "fail.jsonl"))

    took = run_burst(app, pool=pool)

    assert took >= 0.5
    assert retried.status().state is TaskState.SUCCEEDED
    assert [a["attempt"] for a in tasks.read(log)] == [0, 1]
    assert plain.status().payload == 3
    assert failing.status().state is TaskState.FAILED
    assert len(tasks.read(tmp_path / "fail.jsonl")) == 2
    for count in (app.broker.pending_count, app.broker.inflight_count, app.broker.delayed_count):
        assert count("default") == 0


def test_burst_on_an_empty_queue_returns_at_once(make_app: AppFactory) -> None:
    app = make_app()
    app.task(name="rt.add")(tasks.add)
    assert run_burst(app, timeout=10) < 3


def test_prefetch_bounds_deliveries_held_across_all_queues(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """W-16: a worker on several queues still holds at most `prefetch` deliveries in all."""
    app = make_app()
    gated = app.task(name="rt.gated", bind=True)(tasks.revocable)
    gate = tmp_path / "go"
    queues = ["q1", "q2", "q3"]
    results = [
        gated.apply_async(args=[str(tmp_path / f"{q}.jsonl"), str(gate)], queue=q) for q in queues
    ]

    def held() -> int:
        return sum(app.broker.inflight_count(q) for q in queues)

    with running(app, queues=queues, concurrency=1, prefetch_multiplier=1):
        try:
            wait_for(lambda: held() >= 1, timeout=10)
            most = max_over(held, 0.5)
        finally:
            gate.touch()
        for result in results:
            assert result.wait(timeout=15).state is TaskState.SUCCEEDED
    assert most <= 1, f"held {most} deliveries with a prefetch of 1"
