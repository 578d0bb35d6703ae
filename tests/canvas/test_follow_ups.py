"""A task's follow-ups (its group result and chord callback, its links, the next step of
its chain) are stored before its job is acked, so a worker that stops between the two
loses none of them, and a re-run does not publish them twice.

The stop is simulated at the edge: the broker refuses the follow-up's publish once,
as a full disk or a killed process would leave it. The job must then come back, run
again, and publish the follow-up exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stem_sqlite import Envelope, Stem, chain, chord
from stem_sqlite.errors import StorageError
from tests.canvas.canvas_tasks import read
from tests.canvas.conftest import Canvas
from tests.conftest import wait_for
from tests.runtime.conftest import running, stays


@contextmanager
def publish_fails_once(app: Stem, task_name: str) -> Iterator[list[str]]:
    """The broker refuses the first publish of a ``task_name`` job; yields the ids refused."""
    broker = app.broker
    real_publish = broker.publish
    refused: list[str] = []

    def publish(envelope: Envelope, **routing: Any) -> None:
        if envelope.name == task_name and not refused:
            refused.append(envelope.id)
            raise StorageError("injected: the broker file could not be written")
        real_publish(envelope, **routing)

    broker.publish = publish  # type: ignore[method-assign]
    try:
        yield refused
    finally:
        del broker.publish


def test_a_link_refused_once_is_published_by_the_re_run_and_runs_once(canvas: Canvas) -> None:
    square, on_error = canvas.tasks["square"], canvas.tasks["on_error"]
    runs, links = canvas.file("runs.jsonl"), canvas.file("links.jsonl")
    result = square.apply_async(args=[runs, 3], link=on_error.s(links, "linked"))
    with publish_fails_once(canvas.app, "canvas.on_error") as refused, running(canvas.app):
        wait_for(lambda: read(links), timeout=20, message="the link never ran")
        assert stays(lambda: len(read(links)) == 1, 0.5), f"the link ran again: {read(links)}"
        assert result.get(timeout=10) == 9
    assert refused, "the fault was never injected"
    assert [r["i"] for r in read(runs)] == [3, 3], "the parent runs again to publish its link"
    assert canvas.app.broker.pending_count("default") == 0


def test_a_chain_step_refused_once_is_published_by_the_re_run(canvas: Canvas) -> None:
    concat = canvas.tasks["concat"]
    path = canvas.file("steps.jsonl")
    result = chain(concat.s("a", "b", path), concat.s("c", path), concat.s("d", path)).apply_async()
    # the first step is already published; the second one's publish fails once
    with publish_fails_once(canvas.app, "canvas.concat") as refused, running(canvas.app):
        assert result.get(timeout=20) == "abcd"
        assert stays(lambda: len(read(path)) == 4, 0.5), read(path)
    assert refused, "the fault was never injected"
    suffixes = Counter(r["suffix"] for r in read(path))
    assert suffixes == Counter({"b": 2, "c": 1, "d": 1}), "only the step before the fault re-ran"


def test_a_chord_callback_refused_after_the_claim_is_published_by_the_re_run(
    canvas: Canvas,
) -> None:
    """The worst place to stop: the chord is claimed, its callback not yet published.
    Only the member that claimed may claim again; its re-run publishes the callback."""
    square, collect = canvas.tasks["square"], canvas.tasks["collect"]
    runs, calls = canvas.file("runs.jsonl"), canvas.file("calls.jsonl")
    result = chord([square.s(runs, i) for i in range(3)], collect.s(calls, "chord")).apply_async()
    with publish_fails_once(canvas.app, "canvas.collect") as refused, running(canvas.app):
        assert result.get(timeout=20) == [0, 1, 4]
        assert stays(lambda: len(read(calls)) == 1, 0.5), f"the callback ran again: {read(calls)}"
    assert refused, "the fault was never injected"
    members = Counter(r["i"] for r in read(runs))
    assert sum(members.values()) == 4, f"exactly one member runs again: {members}"
    assert set(members) == {0, 1, 2}


@contextmanager
def first_ack_fails(app: Stem, task_name: str) -> Iterator[list[str]]:
    """The broker refuses the first ack of each ``task_name`` job, after its follow-ups
    were published: the job runs again and must not publish them a second time."""
    broker = app.broker
    real_ack = broker.ack
    refused: list[str] = []

    def ack(delivery: Any) -> bool:
        envelope = delivery.envelope
        if envelope.name == task_name and envelope.id not in refused:
            refused.append(envelope.id)
            raise StorageError("injected: the ack could not be written")
        return bool(real_ack(delivery))

    broker.ack = ack  # type: ignore[method-assign]
    try:
        yield refused
    finally:
        del broker.ack


def test_a_parent_that_runs_again_after_publishing_its_link_does_not_publish_it_twice(
    canvas: Canvas,
) -> None:
    square, on_error = canvas.tasks["square"], canvas.tasks["on_error"]
    runs, links = canvas.file("runs.jsonl"), canvas.file("links.jsonl")
    result = square.apply_async(args=[runs, 5], link=on_error.s(links, "linked"))
    with first_ack_fails(canvas.app, "canvas.square") as refused, running(canvas.app):
        wait_for(lambda: len(read(runs)) == 2, timeout=20, message="the parent did not run again")
        assert result.get(timeout=10) == 25
        wait_for(lambda: read(links), timeout=20, message="the link never ran")
        assert stays(lambda: len(read(links)) == 1, 0.5), f"the link ran twice: {read(links)}"
    assert refused == [result.id]


def test_members_that_run_again_after_the_chord_fired_do_not_fire_it_twice(
    canvas: Canvas,
) -> None:
    square, collect = canvas.tasks["square"], canvas.tasks["collect"]
    runs, calls = canvas.file("runs.jsonl"), canvas.file("calls.jsonl")
    result = chord([square.s(runs, i) for i in range(3)], collect.s(calls, "chord")).apply_async()
    with first_ack_fails(canvas.app, "canvas.square") as refused, running(canvas.app):
        wait_for(lambda: len(read(runs)) == 6, timeout=20, message="members did not run again")
        assert result.get(timeout=20) == [0, 1, 4]
        assert stays(lambda: len(read(calls)) == 1, 0.5), f"the callback ran again: {read(calls)}"
    assert len(refused) == 3


def test_a_damaged_chain_step_ends_the_chain_and_the_parent_runs_once(canvas: Canvas) -> None:
    """Running the parent again cannot mend a step that cannot be read: it is logged,
    and the parent is acked (not sent round until the delivery limit)."""
    from stem_sqlite.canvas import META_CHAIN

    square = canvas.tasks["square"]
    runs = canvas.file("runs.jsonl")
    result = square.apply_async(args=[runs, 4], meta={META_CHAIN: [{"not": "a signature"}]})
    with running(canvas.app):
        assert result.get(timeout=20) == 16
        assert stays(lambda: len(read(runs)) == 1, 0.5), f"the parent ran again: {read(runs)}"
    assert canvas.app.broker.pending_count("default") == 0
    assert canvas.app.broker.inflight_count("default") == 0
