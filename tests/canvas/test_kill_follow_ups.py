"""Workers killed with SIGKILL, again and again, while they run chords, chains and
linked tasks: every chord callback, every chain step and every link still runs, with
the right arguments. A follow-up is stored before its parent's ack (see
``canvas_steps.py``), so a kill at any point leaves the parent to run again, and the
re-run publishes what the dead worker had not.

A kill rarely lands in the few milliseconds between a parent's end and its ack; the
fault tests of ``test_follow_ups.py`` pin that moment down. This test shows the whole
at real scale: real processes, real kills, jobs coming back and running again.

The kill times are random and reproducible: the seed is printed, ``STEM_REL_SEED`` sets it.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections import Counter

import pytest

from stem_sqlite import chain, chord
from tests.canvas.canvas_tasks import read
from tests.canvas.conftest import Canvas, WorkerProcesses
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(180)

OPTIONS = ("--visibility-timeout", "1")  # a killed worker's jobs come back within a second
KILLS = 6
CHORDS, MEMBERS, CHAINS, LINKS = 40, 4, 20, 20
MEMBER_SLEEP = 0.06  # at most; about 5 s of work for 4 slots


def test_killed_workers_lose_no_chord_callback_chain_step_or_link(
    canvas: Canvas, workers: WorkerProcesses
) -> None:
    seed = int(os.environ.get("STEM_REL_SEED") or random.randrange(2**32))
    print(f"STEM_REL_SEED={seed}")
    rng = random.Random(seed)
    jitter, tsum = canvas.tasks["jitter"], canvas.tasks["tsum"]
    concat, square, on_error = (
        canvas.tasks["concat"],
        canvas.tasks["square"],
        canvas.tasks["on_error"],
    )
    members, calls = canvas.file("members.jsonl"), canvas.file("calls.jsonl")
    steps, runs, links = (
        canvas.file("steps.jsonl"),
        canvas.file("runs.jsonl"),
        canvas.file("links.jsonl"),
    )

    workers.start(2, concurrency=2, extra=OPTIONS)
    chords = []
    for k in range(CHORDS):
        header = [jitter.s(members, k * MEMBERS + j, MEMBER_SLEEP) for j in range(MEMBERS)]
        expected = sum((k * MEMBERS + j) ** 2 for j in range(MEMBERS))
        chords.append((chord(header, tsum.s(calls, f"chord{k}")).apply_async(), expected))
    chains = [
        chain(
            concat.s(f"x{k}", "a", steps), concat.s("b", steps), concat.s("c", steps)
        ).apply_async()
        for k in range(CHAINS)
    ]
    for k in range(LINKS):
        square.apply_async(args=[runs, 1000 + k], link=on_error.s(links, f"link{k}"))

    held_at_kill = 0
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.05, 0.3))  # a random moment of the run, not a wait
        live = [n for n, proc in enumerate(workers.procs) if proc.poll() is None]
        victim = rng.choice(live)
        workers.procs[victim].kill()
        workers.procs[victim].wait(timeout=10)
        held_at_kill += held_by(canvas, f"canvas-worker-{victim}")
        workers.start(1, concurrency=2, extra=OPTIONS)

    for k, (result, expected) in enumerate(chords):
        assert result.get(timeout=60) == expected, f"chord {k} (seed {seed})"
    for k, result in enumerate(chains):
        assert result.get(timeout=60) == f"x{k}abc", f"chain {k} (seed {seed})"
    wait_for(
        lambda: {r["tag"] for r in read(links)} == {f"link{k}" for k in range(LINKS)},
        timeout=60,
        message=f"a link never ran (seed {seed}): {sorted(r['tag'] for r in read(links))}",
    )
    # A follow-up runs again only when a kill stopped it while it ran (at most once per kill).
    callbacks = Counter(r["tag"] for r in read(calls))
    assert set(callbacks) == {f"chord{k}" for k in range(CHORDS)}
    assert sum(callbacks.values()) <= CHORDS + KILLS, callbacks
    linked = Counter(r["tag"] for r in read(links))
    assert sum(linked.values()) <= LINKS + KILLS, linked
    print(f"jobs held by killed workers: {held_at_kill}")
    assert held_at_kill > 0, f"no kill found a worker holding a job (seed {seed})"


def held_by(canvas: Canvas, worker: str) -> int:
    """Jobs whose lease the (dead) worker still holds: they come back once it ends."""
    with sqlite3.connect(canvas.folder / "b.sqlite") as conn:
        row = conn.execute(
            "SELECT count(*) FROM stem_jobs WHERE leased_by = ? AND lease_token IS NOT NULL",
            (worker,),
        ).fetchone()
    conn.close()
    return int(row[0])
