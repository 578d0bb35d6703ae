"""What a task sees and does: non-JSON results, links, child tasks, progress, lease
renewal from the context (api.md §5-6, contract W-5, C-1..C-6, X-12b, X-13)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stem_sqlite import GroupDescriptor, RetryPolicy, TaskState
from tests.conftest import wait_for
from tests.runtime import tasks
from tests.runtime.conftest import POOLS, AppFactory, run_burst, running

CONTROL_META = (
    "stem.link",
    "stem.linkError",
    "stem.retryPolicy",
    "stem.expiresAt",
    "stem.timeLimitMs",
    "stem.softTimeLimitMs",
    "stem.ignoreResult",
)


def _assert_no_control_keys(seen: dict[str, Any]) -> None:
    leaked = [key for key in CONTROL_META if key in seen["meta"]]
    assert leaked == [], f"{seen['label']} inherited control meta {leaked}"
    headers = [name for name in seen["headers"] if name.startswith("stem-")]
    assert headers == [], f"{seen['label']} inherited control headers {headers}"


@pytest.mark.parametrize("pool", POOLS)
def test_non_json_return_value_fails_clearly_and_the_worker_goes_on(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    bad = app.task(name="rt.returns_datetime", pool=pool)(tasks.returns_datetime)
    add = app.task(name="rt.add", pool=pool)(tasks.add)
    broken = bad.delay()
    after = add.delay(1, 1)

    run_burst(app, pool=pool)

    status = broken.status()
    assert status is not None and status.state is TaskState.FAILED
    assert status.error is not None
    assert status.error.type == "InvalidPayload"
    assert "datetime" in status.error.message  # names the offending value
    assert "rt.returns_datetime" in status.error.message
    assert after.get(timeout=1) == 2


@pytest.mark.parametrize("pool", POOLS)
def test_link_runs_on_success_with_its_own_args_and_lineage_only(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    add = app.task(name="rt.add", pool=pool)(tasks.add)
    describe = app.task(name="rt.describe", bind=True, pool=pool)(tasks.describe)
    log = str(tmp_path / "callbacks.jsonl")
    parent = add.apply_async(
        args=[2, 3],
        link=describe.signature(log, "on-success"),
        link_error=describe.signature(log, "on-error"),
        headers={"traceparent": "00-trace-01", "stem-custom": "control"},
        meta={"origin": "parent"},
        expires=60,
        time_limit=30,
        soft_time_limit=20,
        retry_policy=RetryPolicy(max_retries=0),
    )

    run_burst(app, pool=pool)

    assert parent.get(timeout=1) == 5
    (seen,) = tasks.read(log)
    assert seen["label"] == "on-success"
    assert seen["args"] == [log, "on-success"]  # exactly its own signature: no result passed
    assert seen["kwargs"] == {}
    assert seen["meta"]["stem.parentTaskId"] == parent.id
    assert seen["meta"]["stem.rootTaskId"] == parent.id
    assert seen["headers"].get("traceparent") == "00-trace-01"
    _assert_no_control_keys(seen)
    assert app.backend.get(seen["id"]).state is TaskState.SUCCEEDED


@pytest.mark.parametrize("pool", POOLS)
def test_link_error_runs_on_final_failure_only(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    fail = app.task(name="rt.fail", pool=pool)(tasks.fail)
    describe = app.task(name="rt.describe", bind=True, pool=pool)(tasks.describe)
    log = str(tmp_path / "callbacks.jsonl")
    runs = str(tmp_path / "runs.jsonl")
    parent = fail.apply_async(
        args=[runs, "ValueError", "bad"],
        link=describe.signature(log, "on-success"),
        link_error=[describe.signature(log, "on-error")],
        headers={"tenant": "acme", "stem-group-id": "not-a-group"},
        retry_policy=RetryPolicy(max_retries=1, default_delay=0.01),
        expires=60,
    )

    run_burst(app, pool=pool)

    assert len(tasks.read(runs)) == 2  # one retry first: no callback for `retried`
    assert parent.status().state is TaskState.FAILED
    (seen,) = tasks.read(log)
    assert seen["label"] == "on-error"
    assert seen["args"] == [log, "on-error"]
    assert seen["meta"]["stem.parentTaskId"] == parent.id
    assert seen["meta"]["stem.rootTaskId"] == parent.id
    assert seen["headers"].get("tenant") == "acme"
    _assert_no_control_keys(seen)


@pytest.mark.parametrize("pool", POOLS)
def test_child_tasks_inherit_lineage_and_tracing_but_no_control_keys(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    family = app.task(name="rt.family", bind=True, pool=pool)(tasks.family)
    describe = app.task(name="rt.describe", bind=True)(tasks.describe)
    log = str(tmp_path / "family.jsonl")
    links = str(tmp_path / "links.jsonl")
    app.backend.init_group(GroupDescriptor("g-1", expected=1))
    root = family.apply_async(
        args=[log, "root", 2],
        headers={"traceparent": "00-root-01", "tenant": "acme", "stem-group-id": "g-1"},
        meta={"origin": "user", "stem.groupIndex": 0},
        link=describe.signature(links, "root-link"),
        retry_policy=RetryPolicy(max_retries=1, default_delay=0.01),
        expires=60,
        time_limit=30,
        soft_time_limit=20,
    )

    run_burst(app, pool=pool)

    seen = {entry["label"]: entry for entry in tasks.read(log)}
    assert set(seen) == {
        "root",
        "root.child",
        "root.orphan",
        "root.child.child",
        "root.child.orphan",
    }
    root_entry, child, grandchild = seen["root"], seen["root.child"], seen["root.child.child"]
    assert root_entry["id"] == root.id
    assert root_entry["child_id"] == child["id"]
    assert root_entry["orphan_id"] == seen["root.orphan"]["id"]
    assert child["child_id"] == grandchild["id"]

    assert child["meta"]["stem.parentTaskId"] == root.id
    assert child["meta"]["stem.rootTaskId"] == root.id
    assert child["meta"]["stem.parentAttempt"] == 0
    assert grandchild["meta"]["stem.parentTaskId"] == child["id"]
    assert grandchild["meta"]["stem.rootTaskId"] == root.id
    for label in ("root.child", "root.child.child"):
        assert seen[label]["headers"].get("traceparent") == "00-root-01", label
        assert seen[label]["headers"].get("tenant") == "acme", label
        assert seen[label]["meta"].get("origin") == "user", label
    for label in ("root.child", "root.orphan", "root.child.child", "root.child.orphan"):
        _assert_no_control_keys(seen[label])
        assert "stem.groupIndex" not in seen[label]["meta"], label
    for label in ("root.orphan", "root.child.orphan"):  # add_to_parent=False: no lineage
        assert "stem.parentTaskId" not in seen[label]["meta"], label
        assert "stem.rootTaskId" not in seen[label]["meta"], label

    # Only the parent fires its link, and only the parent counts in its group.
    assert [entry["label"] for entry in tasks.read(links)] == ["root-link"]
    group = app.backend.get_group("g-1")
    assert group is not None
    assert list(group.results) == [root.id]
    for entry in seen.values():
        assert app.backend.get(entry["id"]).state is TaskState.SUCCEEDED


def test_every_terminal_state_reports_to_the_group(make_app: AppFactory, tmp_path: Path) -> None:
    """X-13: the expired path and the exhausted ctx.retry path add a group result too."""
    app = make_app()
    record = app.task(name="rt.record")(tasks.record)
    retry_always = app.task(name="rt.retry_always", bind=True)(tasks.retry_always)
    app.backend.init_group(GroupDescriptor("g-2", expected=2))
    expired = record.apply_async(
        args=[str(tmp_path / "never"), "x"],
        headers={"stem-group-id": "g-2"},
        expires=0.01,
        countdown=0.2,
    )
    exhausted = retry_always.apply_async(
        args=[str(tmp_path / "retry.jsonl")], headers={"stem-group-id": "g-2"}
    )

    run_burst(app)

    group = app.backend.get_group("g-2")
    assert group is not None and group.is_complete
    assert group.results[expired.id].state is TaskState.CANCELLED
    assert group.results[exhausted.id].state is TaskState.FAILED


@pytest.mark.parametrize("pool", POOLS)
def test_progress_is_stored_while_running_and_lease_calls_succeed(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app(visibility=2)
    progress = app.task(name="rt.progress", bind=True, pool=pool)(tasks.progress_then_wait)
    log = str(tmp_path / "lease.jsonl")
    gate = tmp_path / "go"
    result = progress.delay(log, str(gate))

    with running(app, pool=pool):
        status = wait_for(
            lambda: (
                (s := result.status())
                and s.state is TaskState.RUNNING
                and "stem.progress" in s.meta
                and s
            ),
            timeout=15,
            message="progress never appeared in the running status",
        )
        assert status.meta["stem.progress"] == {"percent": 42.0, "data": {"step": "half"}}
        assert status.meta.get("stem.task") == "rt.progress"
        (calls,) = wait_for(lambda: tasks.read(log), timeout=10)
        assert calls == {"heartbeat": True, "extend_lease": True}
        assert app.broker.inflight_count("default") == 1
        gate.touch()
        final = result.wait(timeout=15)

    assert final.state is TaskState.SUCCEEDED
    assert final.payload == "done"
