"""Issue 7, point 5: a group and a chord of 1,000 members complete with two worker
processes, with the results in member order."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from stem_sqlite import chord, group
from tests.canvas.canvas_tasks import read
from tests.canvas.conftest import Canvas, WorkerProcesses
from tests.conftest import wait_for
from tests.runtime.conftest import stays

SIZE = 1000
#: Generous: each member's report re-reads its whole group, so this grows with SIZE².
TIMEOUT = 120

#: Above TIMEOUT, so that the test's own deadlines (with their messages) fire first.
pytestmark = pytest.mark.timeout(TIMEOUT + 60)


def test_a_group_of_1000_members_completes_in_order(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=4)
    square = canvas.tasks["square"]
    path = canvas.file("members.jsonl")

    started = time.monotonic()
    result = group(square.s(path, i) for i in range(SIZE)).apply_async()
    values = result.get(timeout=TIMEOUT)
    elapsed = time.monotonic() - started

    assert values == [i * i for i in range(SIZE)]
    status = wait_for(
        lambda: (g := canvas.app.backend.get_group(result.id)) is not None and g.is_complete and g,
        timeout=TIMEOUT,
        message="the group of 1000 did not complete",
    )
    assert status.completed == status.expected == SIZE
    assert list(status.results) == [r.id for r in result.results]
    records = read(path)
    assert Counter(r["i"] for r in records) == Counter(range(SIZE)), "each member ran once"
    assert {r["pid"] for r in records} == workers.pids, "both worker processes ran members"
    print(f"\ngroup of {SIZE}: results in {elapsed:.1f}s")


def test_a_chord_of_1000_members_fires_once_with_results_in_order(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=4)
    square, collect = canvas.tasks["square"], canvas.tasks["collect"]
    path, calls = canvas.file("members.jsonl"), canvas.file("calls.jsonl")

    started = time.monotonic()
    result = chord([square.s(path, i) for i in range(SIZE)], collect.s(calls, "big")).apply_async()
    values = result.get(timeout=TIMEOUT)
    elapsed = time.monotonic() - started

    expected = [i * i for i in range(SIZE)]
    assert values == expected
    assert stays(lambda: len(read(calls)) == 1, 0.5), f"the callback ran {len(read(calls))} times"
    assert read(calls)[0]["results"] == expected
    assert {r["pid"] for r in read(path)} == workers.pids, "both worker processes ran members"
    print(f"\nchord of {SIZE}: callback result in {elapsed:.1f}s")
