"""Issue 7, point 4 (contract A-8, X-12b): child tasks a group member enqueues with
ctx.enqueue are not members: they neither count towards completion nor reach the
chord's callback. Each member waits until its children have finished, so that a
child counted by mistake would complete the group (and fire the chord) too early."""

from __future__ import annotations

from stem_sqlite import TaskState, chord, group
from tests.canvas.canvas_tasks import read
from tests.canvas.conftest import Canvas, WorkerProcesses
from tests.conftest import wait_for
from tests.runtime.conftest import stays

MEMBERS, CHILDREN = 4, 3


def child_ids(path: str) -> list[str]:
    return [i for r in read(path) if r.get("kind") == "member" for i in r["child_ids"]]


def wait_children_settled(canvas: Canvas, path: str) -> list[str]:
    """Every child has a terminal status (so it would have reported to a group by now)."""
    backend = canvas.app.backend

    def settled() -> list[str] | None:
        ids = child_ids(path)
        if len(ids) < MEMBERS * CHILDREN:
            return None
        states = [backend.get(i).state if backend.get(i) else None for i in ids]
        return ids if all(s is TaskState.SUCCEEDED for s in states) else None

    return wait_for(settled, timeout=20, message="the child tasks did not all succeed")


def test_children_of_group_members_are_not_members(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=4)
    spawner = canvas.tasks["spawner"]
    path = canvas.file("family.jsonl")

    result = group(spawner.s(path, i, CHILDREN) for i in range(MEMBERS)).apply_async()

    assert result.get(timeout=30) == [f"member-{i}" for i in range(MEMBERS)]
    children = wait_children_settled(canvas, path)
    member_ids = [r.id for r in result.results]
    assert not set(children) & set(member_ids)

    def final() -> object:
        status = canvas.app.backend.get_group(result.id)
        return status if status is not None and status.is_complete else None

    wait_for(final, timeout=10, message="the group did not complete")
    # Give a late (wrongly counted) child report time to land before the last check.
    assert stays(
        lambda: (
            (g := canvas.app.backend.get_group(result.id)) is not None and g.completed == MEMBERS
        ),
        0.5,
    ), f"children were counted: {canvas.app.backend.get_group(result.id)}"
    status = canvas.app.backend.get_group(result.id)
    assert status is not None
    assert status.completed == status.expected == MEMBERS
    assert list(status.results) == member_ids, "only the members are in the group"
    assert [s.payload for s in status.results.values()] == [f"member-{i}" for i in range(MEMBERS)]
    assert len({r["pid"] for r in read(path)}) == 2, "both worker processes ran tasks"


def test_a_chord_fires_once_with_only_its_members_results(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=4)
    spawner, collect = canvas.tasks["spawner"], canvas.tasks["collect"]
    path, calls = canvas.file("family.jsonl"), canvas.file("calls.jsonl")

    result = chord(
        [spawner.s(path, i, CHILDREN) for i in range(MEMBERS)], collect.s(calls, "family")
    ).apply_async()

    expected = [f"member-{i}" for i in range(MEMBERS)]
    assert result.get(timeout=30) == expected
    wait_children_settled(canvas, path)
    assert stays(lambda: len(read(calls)) == 1, 0.5), f"the callback ran {len(read(calls))} times"
    assert read(calls)[0]["results"] == expected
    status = result.status()
    assert status is not None
    group_id = status.meta.get("chordId")
    assert group_id, f"the callback's status names no chord: {status.meta}"
    group_status = canvas.app.backend.get_group(group_id)
    assert group_status is not None
    assert group_status.completed == group_status.expected == MEMBERS
