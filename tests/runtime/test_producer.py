"""Producing: apply_async options, AsyncResult, app.enqueue, queued statuses and the
inputs a producer must refuse without storing anything (api.md §5, contract W-19, S-1, X-7)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from stem_sqlite import (
    AsyncResult,
    EnqueueOptions,
    InvalidArgument,
    InvalidPayload,
    ResultTimeout,
    Stem,
    StemError,
    TaskCancelled,
    TaskFailed,
    TaskNotRegistered,
    TaskState,
)
from tests.runtime import tasks
from tests.runtime.conftest import POOLS, AppFactory, run_burst, running


def _counts(app: Stem, queue: str = "default") -> tuple[int, int, int]:
    broker = app.broker
    return broker.pending_count(queue), broker.inflight_count(queue), broker.delayed_count(queue)


def test_countdown_and_eta_delay_delivery(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    t0 = time.time()
    later = record.apply_async(args=[log, "countdown"], countdown=0.6)
    sooner = record.apply_async(args=[log, "eta"], eta=datetime.now(UTC) + timedelta(seconds=0.3))
    now = record.apply_async(args=[log, "now"])
    assert _counts(app) == (1, 0, 2)

    run_burst(app)

    runs = tasks.read(log)
    assert [r["label"] for r in runs] == ["now", "eta", "countdown"]
    by_label = {r["label"]: r["time"] - t0 for r in runs}
    assert by_label["eta"] >= 0.3 - 0.01
    assert by_label["countdown"] >= 0.6 - 0.01
    for result in (later, sooner, now):
        assert result.status().state is TaskState.SUCCEEDED


def test_eta_in_another_time_zone_is_honoured(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    plus_five = datetime.now(timezone(timedelta(hours=5)))
    t0 = time.time()
    record.apply_async(args=[log, "eta"], eta=plus_five + timedelta(seconds=0.3))
    assert _counts(app) == (0, 0, 1)
    run_burst(app)
    assert tasks.read(log)[0]["time"] - t0 >= 0.3 - 0.01


@pytest.mark.parametrize("pool", POOLS)
def test_expired_jobs_are_cancelled_and_never_run(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    record = app.task(name="rt.record", pool=pool)(tasks.record)
    logs = {name: str(tmp_path / f"{name}.jsonl") for name in ("secs", "dt", "past", "alive")}
    # Each expiry passes while the job is still delayed, so it is expired when received.
    secs = record.apply_async(args=[logs["secs"], "secs"], expires=0.05, countdown=0.3)
    dt = record.apply_async(
        args=[logs["dt"], "dt"],
        expires=datetime.now(UTC) + timedelta(seconds=0.05),
        countdown=0.3,
    )
    past = record.apply_async(
        args=[logs["past"], "past"], expires=datetime.now(UTC) - timedelta(seconds=1)
    )
    alive = record.apply_async(args=[logs["alive"], "alive"], expires=60)

    run_burst(app, pool=pool)

    for result, name in ((secs, "secs"), (dt, "dt"), (past, "past")):
        status = result.status()
        assert status is not None and status.state is TaskState.CANCELLED, name
        assert status.error is not None and status.error.type == "TaskExpired", name
        assert status.meta.get("stem.expired") is True
        assert not Path(logs[name]).exists(), f"the body of the expired job {name} ran"
        with pytest.raises(TaskCancelled) as caught:
            result.get(timeout=1)
        assert caught.value.error.type == "TaskExpired"
    assert alive.get(timeout=1) == "alive"
    assert app.broker.list_dead_letters("default").entries == []
    assert _counts(app) == (0, 0, 0)


def test_higher_priority_runs_first(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    record.apply_async(args=[log, "low"], priority=0)
    record.apply_async(args=[log, "high"], priority=9)
    record.apply_async(args=[log, "mid"], priority=5)
    record.apply_async(args=[log, "low2"])
    run_burst(app)
    assert [r["label"] for r in tasks.read(log)] == ["high", "mid", "low", "low2"]


def test_task_default_priority_and_queue_apply(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    urgent = app.task(name="rt.urgent", priority=7, queue="fast")(tasks.record)
    result = urgent.delay(str(tmp_path / "x.jsonl"), "u")
    with app.broker.consume("fast") as consumer:
        delivery = consumer.receive(timeout=2)
        assert delivery is not None
        assert delivery.envelope.id == result.id
        assert delivery.envelope.priority == 7
        assert delivery.envelope.queue == "fast"
        app.broker.ack(delivery)


def test_reused_task_id_replaces_pending_job_in_place(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    record = app.task(name="rt.record")(tasks.record)
    log = str(tmp_path / "runs.jsonl")
    first = record.apply_async(args=[log, "first"], task_id="job-1", countdown=30)
    assert _counts(app) == (0, 0, 1)
    second = record.apply_async(args=[log, "second"], task_id="job-1")
    assert first.id == second.id == "job-1"
    assert _counts(app) == (1, 0, 0)  # one job, no longer delayed

    run_burst(app)

    assert [r["label"] for r in tasks.read(log)] == ["second"]
    assert second.get(timeout=1) == "second"


@pytest.mark.parametrize("pool", POOLS)
def test_ignore_result_stores_success_without_payload(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    add = app.task(name="rt.add", pool=pool)(tasks.add)
    quiet_add = app.task(name="rt.quiet_add", pool=pool, ignore_result=True)(tasks.add)
    per_call = add.apply_async(args=[2, 3], ignore_result=True)
    by_task = quiet_add.delay(4, 5)
    kept = add.delay(6, 7)
    run_burst(app, pool=pool)
    for result in (per_call, by_task):
        status = result.status()
        assert status is not None
        assert status.state is TaskState.SUCCEEDED
        assert status.payload is None
    assert kept.get(timeout=1) == 13


@pytest.mark.parametrize("pool", POOLS)
def test_headers_meta_and_informational_options_are_visible_in_ctx(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    describe = app.task(name="rt.describe", bind=True, pool=pool)(tasks.describe)
    log = str(tmp_path / "ctx.jsonl")
    result = describe.apply_async(
        args=[log, "seen"],
        kwargs={"extra": 1},
        headers={"traceparent": "00-abc-01", "tenant": "acme"},
        meta={"origin": "test"},
        shadow="alias-name",
        reply_to="replies",
        serializer="json",
        compression="zlib",
        exchange="direct-x",
        routing_key="rk-1",
    )
    run_burst(app, pool=pool)
    assert result.get(timeout=1) == "seen"
    (seen,) = tasks.read(log)
    assert seen["id"] == result.id
    assert seen["name"] == "rt.describe"
    assert seen["queue"] == "default"
    assert seen["attempt"] == 0
    assert seen["args"] == [log, "seen"]
    assert seen["kwargs"] == {"extra": 1}
    assert seen["headers"]["traceparent"] == "00-abc-01"
    assert seen["headers"]["tenant"] == "acme"
    meta = seen["meta"]
    assert meta["origin"] == "test"
    assert meta["stem.shadow"] == "alias-name"
    assert meta["stem.replyTo"] == "replies"
    assert meta["stem.serializer"] == "json"
    assert meta["stem.compression"] == "zlib"
    assert "direct-x" in meta.values()
    assert "rk-1" in meta.values()


@pytest.mark.parametrize("pool", POOLS)
def test_async_result_get_wait_state_status_ready(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    add = app.task(name="rt.add", pool=pool)(tasks.add)
    fail = app.task(name="rt.fail", pool=pool)(tasks.fail)
    ok = add.delay(2, 3)
    bad = fail.delay(str(tmp_path / "fail.jsonl"), "ValueError", "no good")

    assert ok.state is TaskState.QUEUED
    assert ok.status() is not None and ok.status().state is TaskState.QUEUED
    assert not ok.ready()
    with pytest.raises(ResultTimeout) as timed_out:
        ok.get(timeout=0.1)
    assert isinstance(timed_out.value, TimeoutError)
    assert AsyncResult("never-enqueued", app).state is None
    assert AsyncResult("never-enqueued", app).status() is None

    with running(app, pool=pool):
        assert ok.get(timeout=15) == 5
        with pytest.raises(TaskFailed) as failed:
            bad.get(timeout=15)

    assert ok.ready() and ok.successful()
    assert ok.state is TaskState.SUCCEEDED
    status = ok.wait(timeout=1)
    assert status.state is TaskState.SUCCEEDED and status.payload == 5 and status.id == ok.id

    error = failed.value.error
    assert isinstance(failed.value, StemError)
    assert failed.value.task_id == bad.id
    assert error.type == "ValueError"
    assert error.message == "no good"
    assert error.traceback and "ValueError" in error.traceback
    assert bad.ready() and bad.state is TaskState.FAILED
    assert bad.wait(timeout=1).error == error


def test_enqueue_options_through_app_enqueue(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    app.task(name="rt.record")(tasks.record)
    options = EnqueueOptions(
        task_id="opt-1",
        queue="special",
        priority=7,
        headers={"tenant": "acme"},
        meta={"origin": "options"},
        max_retries=2,
        countdown=0.05,
    )
    result = app.enqueue("rt.record", args=(str(tmp_path / "x.jsonl"), "o"), options=options)
    assert result.id == "opt-1"
    assert _counts(app, "special") == (0, 0, 1)
    with app.broker.consume("special") as consumer:
        delivery = consumer.receive(timeout=3)
        assert delivery is not None
        envelope = delivery.envelope
        assert envelope.id == "opt-1"
        assert envelope.name == "rt.record"
        assert envelope.queue == "special"
        assert envelope.priority == 7
        assert envelope.max_retries == 2
        assert envelope.headers["tenant"] == "acme"
        assert envelope.meta["origin"] == "options"
        assert envelope.not_before is not None
        assert app.broker.ack(delivery)
    assert result.status().state is TaskState.QUEUED


def test_enqueue_of_unregistered_name(make_app: AppFactory) -> None:
    app = make_app()
    app.task(name="rt.add")(tasks.add)
    with pytest.raises(TaskNotRegistered) as caught:
        app.enqueue("rt.ad", args=(1, 2))
    assert isinstance(caught.value, StemError)
    assert "rt.add" in str(caught.value)  # the near match is suggested
    assert _counts(app) == (0, 0, 0)
    assert app.backend.count_task_statuses() == 0

    result = app.enqueue("elsewhere.task", args=(1,), strict=False)
    assert _counts(app) == (1, 0, 0)
    assert result.state is TaskState.QUEUED


def test_producer_with_backend_writes_queued_but_never_over_a_newer_state(
    make_app: AppFactory,
) -> None:
    app = make_app()
    add = app.task(name="rt.add")(tasks.add)
    fresh = add.apply_async(args=[1, 2], countdown=30)
    status = fresh.status()
    assert status is not None and status.state is TaskState.QUEUED
    assert status.meta.get("queue") == "default"

    app.backend.set("job-running", TaskState.RUNNING, meta={"worker": "w"}, owner="lease-1")
    add.apply_async(args=[1, 2], task_id="job-running", countdown=30)
    assert app.backend.get("job-running").state is TaskState.RUNNING

    app.backend.set("job-done", TaskState.SUCCEEDED, payload=3)
    add.apply_async(args=[1, 2], task_id="job-done", countdown=30)
    done = app.backend.get("job-done")
    assert done.state is TaskState.SUCCEEDED and done.payload == 3


def test_producer_without_backend_writes_no_status(make_app: AppFactory) -> None:
    worker_app = make_app()
    worker_app.task(name="rt.add")(tasks.add)
    producer = Stem(broker=worker_app.broker)  # the recommended layout: no backend
    producer.task(name="rt.add")(tasks.add)

    result = producer.enqueue("rt.add", args=(20, 22))
    assert not producer.has_backend
    assert worker_app.backend.get(result.id) is None
    assert worker_app.backend.count_task_statuses() == 0
    assert _counts(worker_app) == (1, 0, 0)

    run_burst(worker_app)
    assert AsyncResult(result.id, worker_app).get(timeout=1) == 42
    assert not producer.has_backend


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (
            {"countdown": 1, "eta": datetime.now(UTC) + timedelta(seconds=5)},
            InvalidArgument,
        ),
        ({"countdown": -1}, InvalidArgument),
        ({"countdown": float("nan")}, InvalidArgument),
        ({"eta": datetime.now() + timedelta(seconds=5)}, InvalidArgument),
        ({"expires": datetime.now() + timedelta(seconds=5)}, InvalidArgument),
        ({"expires": -5}, InvalidArgument),
        ({"kwargs": {"when": datetime.now(UTC)}}, InvalidPayload),
        ({"args": [object()]}, InvalidPayload),
        ({"headers": {"h": {1, 2}}}, InvalidPayload),
        ({"meta": {"m": b"bytes"}}, InvalidPayload),
        ({"no_such_option": 1}, InvalidArgument),
    ],
    ids=[
        "countdown-and-eta",
        "negative-countdown",
        "nan-countdown",
        "naive-eta",
        "naive-expires",
        "negative-expires",
        "non-json-kwarg",
        "non-json-arg",
        "non-json-header",
        "non-json-meta",
        "unknown-option",
    ],
)
def test_refused_enqueue_stores_nothing(
    make_app: AppFactory, options: dict[str, object], error: type[Exception]
) -> None:
    app = make_app()
    add = app.task(name="rt.add")(tasks.add)
    call = {"args": [1, 2], **options}
    with pytest.raises(error) as caught:
        add.apply_async(**call)
    assert isinstance(caught.value, StemError)
    assert isinstance(caught.value, ValueError if error is InvalidArgument else TypeError)
    if "kwargs" in options:
        assert "when" in str(caught.value)  # the offending key is named
    assert _counts(app) == (0, 0, 0)
    assert app.backend.count_task_statuses() == 0


def test_queued_never_overwrites_what_a_fast_worker_wrote(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """X-7: with a worker already consuming, each producer `queued` write races the worker."""
    app = make_app()
    add = app.task(name="rt.add")(tasks.add)
    with running(app, concurrency=2):
        results = [add.delay(i, i) for i in range(30)]
        for i, result in enumerate(results):
            assert result.get(timeout=10) == 2 * i
    states = {result.status().state for result in results}
    assert states == {TaskState.SUCCEEDED}
