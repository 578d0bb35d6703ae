"""Issue 7, point 3: every terminal state of a member counts towards its group, so a
group always completes (contract X-13): succeeded, failed, cancelled by expiry,
retries exhausted (by exception and by ctx.retry), and an unregistered task name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stem_sqlite import GroupStatus, Signature, TaskFailed, TaskState, chord, group
from tests.canvas.canvas_tasks import read
from tests.canvas.conftest import Canvas, WorkerProcesses
from tests.conftest import wait_for
from tests.runtime.conftest import stays


def bad_members(canvas: Canvas) -> dict[str, Signature]:
    """One signature per terminal state other than success, by label."""
    t = canvas.tasks
    runs = canvas.file("runs.jsonl")
    past = datetime.now(UTC) - timedelta(seconds=5)
    return {
        "failed": t["boom"].s(runs, "failed"),
        "expired-in-the-past": t["square"].s(runs, 100).set(expires=past),
        "expired-before-countdown": t["square"].s(runs, 101).set(expires=0.2, countdown=1.0),
        "retries-exhausted": t["boom"].s(runs, "retries-exhausted").set(max_retries=2),
        "retry-exhausted": t["retry_always"].s(runs, "retry-exhausted").set(max_retries=1),
        "unregistered": Signature("no.such.task", args=(1,), app=canvas.app),
    }


EXPECTED_STATES = {
    "failed": TaskState.FAILED,
    "expired-in-the-past": TaskState.CANCELLED,
    "expired-before-countdown": TaskState.CANCELLED,
    "retries-exhausted": TaskState.FAILED,
    "retry-exhausted": TaskState.FAILED,
    "unregistered": TaskState.FAILED,
}


def complete_group(canvas: Canvas, group_id: str, timeout: float = 20) -> GroupStatus:
    def check() -> GroupStatus | None:
        status = canvas.app.backend.get_group(group_id)
        return status if status is not None and status.is_complete else None

    return wait_for(
        check,
        timeout=timeout,
        message=f"the group never completed: {canvas.app.backend.get_group(group_id)}",
    )


def test_a_group_with_a_member_in_every_terminal_state_completes_in_member_order(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=4)
    square = canvas.tasks["square"]
    runs = canvas.file("runs.jsonl")
    bad = bad_members(canvas)
    labels = ["ok-first", *bad, "ok-last"]
    signatures = [square.s(runs, 7), *bad.values(), square.s(runs, 8)]

    result = group(signatures).apply_async()

    status = complete_group(canvas, result.id)
    assert status.expected == status.completed == len(labels)
    member_ids = [r.id for r in result.results]
    assert list(status.results) == member_ids, "group results are in member order"
    states = dict(zip(labels, (s.state for s in status.results.values()), strict=True))
    assert states == {
        "ok-first": TaskState.SUCCEEDED,
        **EXPECTED_STATES,
        "ok-last": TaskState.SUCCEEDED,
    }
    payloads = [s.payload for s in status.results.values()]
    assert (payloads[0], payloads[-1]) == (49, 64)
    # The member results tell the same story, in the same order.
    assert [r.state for r in result.results] == list(states.values())
    with pytest.raises(TaskFailed) as failure:
        result.get(timeout=5)
    assert failure.value.task_id == member_ids[1], "get() reports the first member that failed"
    assert result.completed_count() == len(labels)
    # Each one ended the way its label says.
    records = read(runs)
    attempts = {
        tag: [r["attempt"] for r in records if r.get("tag") == tag]
        for tag in ("failed", "retries-exhausted", "retry-exhausted")
    }
    assert attempts == {"failed": [0], "retries-exhausted": [0, 1, 2], "retry-exhausted": [0, 1]}
    assert not [r for r in records if r.get("i") in (100, 101)], "expired members never ran"


def test_a_chord_settles_once_whatever_terminal_state_a_member_ends_in(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    """A chord per terminal state: each completes, so its callback is failed (and never
    runs), and the callback's link_error runs exactly once."""
    workers.start(2, concurrency=4)
    square, tsum, on_error = canvas.tasks["square"], canvas.tasks["tsum"], canvas.tasks["on_error"]
    runs, calls, errors = (
        canvas.file("runs.jsonl"),
        canvas.file("calls.jsonl"),
        canvas.file("errors.jsonl"),
    )

    results = {
        label: chord(
            [square.s(runs, 1), member, square.s(runs, 2)],
            tsum.s(calls, label).set(link_error=on_error.s(errors, label)),
        ).apply_async()
        for label, member in bad_members(canvas).items()
    }

    for label, result in results.items():
        with pytest.raises(TaskFailed):
            result.get(timeout=20)
        assert result.state is TaskState.FAILED, label
    wait_for(
        lambda: len(read(errors)) >= len(results),
        timeout=10,
        message=f"link_error ran only for {[r['tag'] for r in read(errors)]}",
    )
    assert stays(lambda: len(read(errors)) == len(results), 0.5), "a link_error ran twice"
    assert sorted(r["tag"] for r in read(errors)) == sorted(results)
    assert read(calls) == [], "no callback may run when a member did not succeed"
