"""The worker's timer thread: cancelled timers (every lease renewal of a task that ended)
must not keep their callbacks, nor pile up, while a busy worker settles thousands of
tasks a second with leases tens of seconds long."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from stem_sqlite.worker.scheduler import COMPACT_AFTER, Scheduler
from tests.conftest import wait_for


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    running = Scheduler()
    yield running
    running.stop()


class Held:
    """Stands for a held lease: what a renewal timer's callback refers to."""

    def renew(self) -> None:
        pass


def test_a_cancelled_timer_lets_go_of_its_callback_at_once(scheduler: Scheduler) -> None:
    held = Held()
    alive = weakref.ref(held)
    timer = scheduler.call_later(3600, held.renew)
    timer.cancel()
    del held
    gc.collect()
    assert alive() is None, "a cancelled timer kept its lease (and delivery) alive"


def test_cancelled_timers_are_dropped_once_they_are_the_majority(scheduler: Scheduler) -> None:
    keep = [scheduler.call_later(3600, Held().renew) for _ in range(10)]
    for _ in range(5 * COMPACT_AFTER):
        scheduler.call_later(3600, Held().renew).cancel()
    assert scheduler.queued <= 2 * COMPACT_AFTER + len(keep)
    assert not any(timer.cancelled for timer in keep)


def test_timers_still_fire_in_order_and_cancelled_ones_never(scheduler: Scheduler) -> None:
    fired: list[int] = []
    done = threading.Event()
    for i in range(3):
        scheduler.call_later(0.01 * (i + 1), lambda i=i: fired.append(i))
    for _ in range(COMPACT_AFTER + 5):
        scheduler.call_later(0.005, lambda: fired.append(-1)).cancel()
    scheduler.call_later(0.05, done.set)
    wait_for(done.is_set, timeout=10, message="the last timer did not fire")
    assert fired == [0, 1, 2]
