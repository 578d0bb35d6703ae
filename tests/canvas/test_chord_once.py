"""Issue 7, point 2: a chord fires exactly once when workers in separate processes
finish its members at the same moment; a member that fails for good fails the chord
(the callback does not run, its state is failed, its link_error runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from stem_sqlite import GroupDescriptor, TaskFailed, TaskState, chord
from tests.canvas.canvas_tasks import read
from tests.canvas.conftest import Canvas, WorkerProcesses
from tests.conftest import wait_for
from tests.runtime.conftest import stays


def open_gate_at(gate: str, when: float) -> None:
    """Members waiting on ``gate`` end at the wall-clock time ``when``."""
    partial = gate + ".tmp"
    Path(partial).write_text(f"{when!r}\n")
    os.replace(partial, gate)  # appears whole


def test_chords_whose_members_end_at_the_same_moment_in_both_workers_fire_once(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    """Round after round, a chord of 8 members fills the 4 slots of each worker; its
    gate opens only once all 8 run, so they end together in two processes."""
    workers.start(2, concurrency=4)
    gated, collect = canvas.tasks["gated"], canvas.tasks["collect"]
    path, calls = canvas.file("members.jsonl"), canvas.file("calls.jsonl")
    backend = canvas.app.backend
    rounds, size = 40, 8

    for k in range(rounds):
        tag, gate = f"r{k}", canvas.file(f"gate{k}")
        result = chord(
            [gated.s(path, gate, tag, j) for j in range(size)], collect.s(calls, tag)
        ).apply_async()
        wait_for(
            lambda: backend.count_task_statuses(state=TaskState.RUNNING) == size,
            timeout=20,
            message=f"round {k}: the two workers did not run all {size} members at once",
        )
        open_gate_at(gate, time.time() + 0.05)
        assert result.get(timeout=20) == [f"{tag}:{j}" for j in range(size)], "header order"

    assert stays(lambda: len(read(calls)) == rounds, 1.0), f"a callback ran again: {read(calls)}"
    counts = Counter(r["tag"] for r in read(calls))
    assert counts == Counter({f"r{k}": 1 for k in range(rounds)})
    pids = defaultdict(set)
    for record in read(path):
        pids[record["tag"]].add(record["pid"])
    assert all(seen == workers.pids for seen in pids.values()), (
        "each chord's members ran in both worker processes"
    )


def test_many_chords_each_fire_exactly_once_with_members_finishing_together(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=4)
    gated, collect = canvas.tasks["gated"], canvas.tasks["collect"]
    path, calls = canvas.file("members.jsonl"), canvas.file("calls.jsonl")
    gate = canvas.file("gate")
    chords = 100

    results = {
        f"c{k}": chord(
            [gated.s(path, gate, f"c{k}", j) for j in range(2)], collect.s(calls, f"c{k}")
        ).apply_async()
        for k in range(chords)
    }
    # Fill every slot of both workers with a member waiting for the gate, then open it:
    # the held members end at the same moment, and the rest follow as fast as they can.
    wait_for(
        lambda: canvas.app.backend.count_task_statuses(state=TaskState.RUNNING) == 8,
        timeout=20,
        message="the two workers did not fill their 8 slots",
    )
    Path(gate).touch()

    for tag, result in results.items():
        assert result.get(timeout=60) == [f"{tag}:0", f"{tag}:1"], "header order"
    assert stays(lambda: len(read(calls)) == chords, 1.0), "a callback ran again"
    counts = Counter(r["tag"] for r in read(calls))
    assert counts == Counter({tag: 1 for tag in results}), (
        f"callbacks that did not run exactly once: { {t: c for t, c in counts.items() if c != 1} }"
    )
    assert {r["pid"] for r in read(calls)} == workers.pids, "both workers fired callbacks"


def test_a_member_that_exhausts_its_retries_fails_the_chord_and_runs_link_error(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    workers.start(2, concurrency=2)
    square, boom = canvas.tasks["square"], canvas.tasks["boom"]
    tsum, on_error = canvas.tasks["tsum"], canvas.tasks["on_error"]
    members, fails = canvas.file("members.jsonl"), canvas.file("fails.jsonl")
    calls, errors = canvas.file("calls.jsonl"), canvas.file("errors.jsonl")

    result = chord(
        [square.s(members, 1), boom.s(fails, "bad").set(max_retries=2), square.s(members, 2)],
        tsum.s(calls, "sum").set(link_error=on_error.s(errors, "chord-failed")),
    ).apply_async()

    with pytest.raises(TaskFailed) as failure:
        result.get(timeout=30)
    assert failure.value.task_id == result.id
    assert result.state is TaskState.FAILED, "the chord (its callback's result) is failed"
    assert [r["attempt"] for r in read(fails)] == [0, 1, 2], "the member ran 1 + max_retries times"
    wait_for(lambda: read(errors), timeout=10, message="the callback's link_error did not run")
    assert stays(lambda: len(read(errors)) == 1, 0.5), "link_error ran more than once"
    assert read(errors)[0]["tag"] == "chord-failed"
    assert read(calls) == [], "the callback must not run"
    assert sorted(r["i"] for r in read(members)) == [1, 2]


# argv: backend_path folder name count. Claims chords g0..g<count-1> as soon as
# the file <folder>/go exists; writes the indexes it won to <folder>/<name>.json.
CLAIMER = r"""
import json, sys, time
from pathlib import Path
from stem_sqlite import SqliteResultBackend

db, folder, name, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
with SqliteResultBackend.open(db) as backend:
    (folder / f"{name}.ready").touch()
    deadline = time.monotonic() + 20
    while not (folder / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go")
        time.sleep(0.001)
    won = [i for i in range(count) if backend.claim_chord(f"g{i}", callback_task_id=name)]
(folder / f"{name}.json").write_text(json.dumps(won))
"""


def test_claim_chord_from_several_processes_has_exactly_one_winner(tmp_path: Path) -> None:
    from stem_sqlite import SqliteResultBackend

    db, count, names = tmp_path / "r.sqlite", 300, ["p0", "p1", "p2"]
    with SqliteResultBackend.open(db) as backend:
        for i in range(count):
            backend.init_group(GroupDescriptor(f"g{i}", expected=1))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(db), str(tmp_path), name, str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    try:
        wait_for(
            lambda: all((tmp_path / f"{n}.ready").exists() for n in names),
            timeout=20,
            message="the claimers did not start",
        )
        (tmp_path / "go").touch()
        for proc in procs:
            _out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, f"a claimer failed (no exception allowed): {err}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    wins = [i for n in names for i in json.loads((tmp_path / f"{n}.json").read_text())]
    assert sorted(wins) == list(range(count)), (
        f"each chord must be claimed exactly once: "
        f"{ {i: c for i, c in Counter(wins).items() if c != 1} }, "
        f"unclaimed {sorted(set(range(count)) - set(wins))[:10]}"
    )
