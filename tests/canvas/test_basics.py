"""Issue 7, point 1: group, chain and chord with two worker processes, plus bad input."""

from __future__ import annotations

import pytest

from stem_sqlite import (
    GroupResult,
    InvalidArgument,
    TaskFailed,
    TaskState,
    chain,
    chord,
    group,
)
from tests.canvas.canvas_tasks import read
from tests.canvas.conftest import Canvas, WorkerProcesses
from tests.conftest import wait_for
from tests.runtime.conftest import stays


def completion_order(records: list[dict]) -> list[int]:
    return [r["i"] for r in sorted(records, key=lambda r: r["t"])]


def test_group_get_lists_member_results_in_signature_order(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=4)
    jitter = canvas.tasks["jitter"]
    path = canvas.file("members.jsonl")
    n = 40

    result = group(jitter.s(path, i, 0.05) for i in range(n)).apply_async()

    assert isinstance(result, GroupResult)
    assert len(result) == n
    assert result.get(timeout=30) == [i * i for i in range(n)]
    records = read(path)
    finished = completion_order(records)
    assert sorted(finished) == list(range(n)), "every member runs exactly once"
    assert finished != list(range(n)), (
        "the members finished in signature order: the test cannot tell the order apart"
    )
    assert {r["pid"] for r in records} == workers.pids, "both worker processes ran members"
    # The status is stored before the member reports to its group: wait for that too.
    status = wait_for(
        lambda: (g := canvas.app.backend.get_group(result.id)) and g.is_complete and g,
        timeout=10,
        message="the group did not complete",
    )
    assert status.completed == status.expected == n
    assert list(status.results) == [r.id for r in result.results], "member order"
    assert [s.payload for s in status.results.values()] == [i * i for i in range(n)]
    assert result.ready()
    assert result.completed_count() == n


def test_group_takes_signatures_as_arguments_or_one_list(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=2)
    square = canvas.tasks["square"]
    path = canvas.file("members.jsonl")

    spread = group(square.s(path, 3), square.s(path, 1), square.s(path, 2)).apply_async()
    listed = group([square.s(path, 5), square.s(path, 4)]).apply_async()

    assert spread.get(timeout=20) == [9, 1, 4]
    assert listed.get(timeout=20) == [25, 16]


def test_chain_passes_each_result_as_the_first_argument_of_the_next(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=4)
    concat = canvas.tasks["concat"]
    letters = "abcdefgh"
    paths = {c: canvas.file(f"chain-{c}.jsonl") for c in letters}

    # Several chains at once, so their steps are spread over both workers.
    results = {
        c: chain(
            concat.s(c, "1", paths[c]), concat.s("2", paths[c]), concat.s("3", paths[c])
        ).apply_async()
        for c in letters
    }

    for c, result in results.items():
        assert result.get(timeout=30) == f"{c}123", "the chain's result is the last task's"
        steps = [(r["prev"], r["suffix"]) for r in read(paths[c])]
        assert steps == [(c, "1"), (f"{c}1", "2"), (f"{c}12", "3")], (
            "each step ran once, in order, with the previous result first"
        )


def test_a_failed_chain_step_fails_the_chain_and_stops_it(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=2)
    concat, explode = canvas.tasks["concat"], canvas.tasks["explode"]
    path, fails = canvas.file("steps.jsonl"), canvas.file("fails.jsonl")

    result = chain(
        concat.s("x", "1", path), explode.s(fails, "middle"), concat.s("never", path)
    ).apply_async()

    with pytest.raises(TaskFailed):
        result.get(timeout=20)
    assert result.state is TaskState.FAILED
    assert [(r["tag"], r["prev"]) for r in read(fails)] == [("middle", "x1")]
    assert stays(lambda: len(read(path)) == 1, 0.5), "no step after the failed one runs"


def test_chord_runs_the_callback_once_with_header_results_in_header_order(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=4)
    jitter, collect = canvas.tasks["jitter"], canvas.tasks["collect"]
    path, calls = canvas.file("members.jsonl"), canvas.file("callback.jsonl")
    n = 24

    result = chord(
        [jitter.s(path, i, 0.05) for i in range(n)], collect.s(calls, "only")
    ).apply_async()

    expected = [i * i for i in range(n)]
    assert result.get(timeout=30) == expected
    assert completion_order(read(path)) != list(range(n)), (
        "the header finished in header order: the test cannot tell the order apart"
    )
    assert {r["pid"] for r in read(path)} == workers.pids, "both worker processes ran members"
    assert stays(lambda: len(read(calls)) == 1, 0.5), (
        f"the callback must run exactly once: {read(calls)}"
    )
    (call,) = read(calls)
    assert call["tag"] == "only"
    assert call["results"] == expected


# -- bad input ----------


def test_group_refuses_no_signatures_and_non_signatures(canvas: Canvas) -> None:
    square = canvas.tasks["square"]
    app = canvas.app
    with pytest.raises(ValueError):
        group().apply_async(app=app)
    with pytest.raises(ValueError):
        group([]).apply_async(app=app)
    with pytest.raises(InvalidArgument):
        group([square.s("p", 1), 5])
    with pytest.raises(InvalidArgument):
        group(square.s("p", 1), "canvas.square")
    with pytest.raises(InvalidArgument):
        group([square])  # the task, not a signature of it
    assert app.broker.pending_count("default") == 0, "nothing is published"
    assert app.backend.count_task_statuses() == 0, "nothing is recorded"


def test_chain_refuses_no_signatures_and_non_signatures(canvas: Canvas) -> None:
    square = canvas.tasks["square"]
    with pytest.raises(InvalidArgument):
        chain()
    with pytest.raises(InvalidArgument):
        chain(square.s("p", 1), 3)
    assert canvas.app.broker.pending_count("default") == 0


def test_chord_refuses_a_callback_that_is_not_a_signature(canvas: Canvas) -> None:
    square, tsum = canvas.tasks["square"], canvas.tasks["tsum"]
    header = [square.s("p", 1), square.s("p", 2)]
    for callback in ("canvas.tsum", None, tsum, {"name": "canvas.tsum"}):
        with pytest.raises(InvalidArgument):
            chord(header, callback)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        chord([square.s("p", 1), 2], tsum.s("p", "t"))
    assert canvas.app.broker.pending_count("default") == 0, "nothing is published"
