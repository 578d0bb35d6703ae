"""Retries: the W-8 delay formulas, A-2, auto-retry filters, ctx.retry and the
`retried` status between attempts (contract W-3, W-4, W-8, S-4, S-5, X-3)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from stem_sqlite import RetryPolicy, Stem, TaskState
from stem_sqlite.retry import retry_delay
from tests.conftest import wait_for
from tests.runtime import tasks
from tests.runtime.conftest import POOLS, AppFactory, run_burst, running


class MaxJitter:
    """A random source that always takes the most jitter, and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def randint(self, a: int, b: int) -> int:
        self.calls.append((a, b))
        return b


class NoJitter(MaxJitter):
    def randint(self, a: int, b: int) -> int:
        self.calls.append((a, b))
        return a


def _reasons(app: Stem, queue: str = "default") -> list[tuple[str, str | None]]:
    return [(e.envelope.id, e.reason) for e in app.broker.list_dead_letters(queue).entries]


# -- W-8: the delay formulas ----------


@pytest.mark.parametrize(
    ("attempt", "capped_ms"),
    [(0, 2000), (1, 4000), (2, 8000), (7, 256000), (8, 300000), (20, 300000)],
)
def test_default_strategy_is_exponential_from_2s_capped_at_5min(
    attempt: int, capped_ms: int
) -> None:
    no_jitter, max_jitter = NoJitter(), MaxJitter()
    assert retry_delay(attempt, None, no_jitter) == pytest.approx(capped_ms / 1000)
    assert no_jitter.calls == [(0, capped_ms // 4)]
    assert retry_delay(attempt, None, max_jitter) == pytest.approx(
        (capped_ms - capped_ms // 4) / 1000
    )


def test_default_strategy_with_a_seeded_random_stays_in_range() -> None:
    rng = random.Random(0)
    for attempt in range(10):
        capped = min(2.0 * 2**attempt, 300.0)
        delay = retry_delay(attempt, None, rng)
        assert 0.75 * capped - 0.001 <= delay <= capped
    # Same seed, same delays: the source really is the one injected.
    first = [retry_delay(a, None, random.Random(42)) for a in range(6)]
    again = [retry_delay(a, None, random.Random(42)) for a in range(6)]
    assert first == again


def test_policy_without_backoff_is_a_fixed_delay() -> None:
    policy = RetryPolicy(default_delay=1.5)
    rng = MaxJitter()
    assert [retry_delay(a, policy, rng) for a in range(4)] == [1.5, 1.5, 1.5, 1.5]
    assert rng.calls == []  # no jitter without backoff
    assert retry_delay(3, RetryPolicy(), rng) == 0


def test_policy_backoff_doubles_and_caps() -> None:
    policy = RetryPolicy(default_delay=0.5, backoff=True, backoff_max=3, jitter=False)
    assert [retry_delay(a, policy, MaxJitter()) for a in range(5)] == [0.5, 1, 2, 3, 3]
    uncapped = RetryPolicy(default_delay=0.5, backoff=True, jitter=False)
    assert retry_delay(4, uncapped, MaxJitter()) == 8


def test_policy_backoff_jitter_takes_up_to_a_quarter() -> None:
    policy = RetryPolicy(default_delay=0.2, backoff=True, backoff_max=0.3)
    rng = MaxJitter()
    assert retry_delay(0, policy, rng) == pytest.approx(0.15)  # 200 - 50 ms
    assert retry_delay(1, policy, rng) == pytest.approx(0.225)  # 300 - 75 ms
    assert rng.calls == [(0, 50), (0, 75)]
    assert retry_delay(1, policy, NoJitter()) == pytest.approx(0.3)
    seeded = random.Random(0)
    for attempt in range(6):
        assert 0.075 - 0.001 <= retry_delay(attempt + 1, policy, seeded) <= 0.3


def test_policy_zero_base_with_backoff_max_gives_the_maximum() -> None:
    """The original's quirk (W-8): base 0 with backoff and a backoff_max."""
    quirk = RetryPolicy(default_delay=0, backoff=True, backoff_max=4, jitter=False)
    assert retry_delay(0, quirk, MaxJitter()) == 4
    assert retry_delay(3, quirk, MaxJitter()) == 4
    with_jitter = RetryPolicy(default_delay=0, backoff=True, backoff_max=4)
    assert retry_delay(0, with_jitter, MaxJitter()) == pytest.approx(3)
    assert retry_delay(0, RetryPolicy(backoff=True), MaxJitter()) == 0


# -- retries through a real worker ----------


@pytest.mark.parametrize("pool", POOLS)
def test_a2_always_failing_task_runs_four_times_then_one_dead_letter(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    fail = app.task(
        name="rt.fail",
        pool=pool,
        max_retries=3,
        retry_policy=RetryPolicy(default_delay=0.01, jitter=False),
    )(tasks.fail)
    log = str(tmp_path / "runs.jsonl")
    result = fail.delay(log, "RuntimeError", "always")

    run_burst(app, pool=pool)

    assert len(tasks.read(log)) == 4
    status = result.status()
    assert status is not None and status.state is TaskState.FAILED
    assert status.attempt == 3
    assert status.error is not None and status.error.type == "RuntimeError"
    assert status.error.message == "always"
    assert status.error.retryable is False
    assert _reasons(app) == [(result.id, "max-retries-exhausted")]
    assert app.broker.pending_count("default") == 0
    assert app.broker.delayed_count("default") == 0


def test_retry_delays_follow_the_policy_with_the_workers_random_source(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = make_app()
    policy = RetryPolicy(default_delay=0.2, backoff=True, backoff_max=0.3, jitter=True)
    fail = app.task(name="rt.fail", max_retries=2, retry_policy=policy)(tasks.fail)
    log = str(tmp_path / "runs.jsonl")
    rng = MaxJitter()
    result = fail.delay(log)

    run_burst(app, rng=rng)

    assert rng.calls == [(0, 50), (0, 75)]
    times = [r["time"] for r in tasks.read(log)]
    assert len(times) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert 0.15 - 0.01 <= gaps[0] < 0.15 + 1.0, gaps
    assert 0.225 - 0.01 <= gaps[1] < 0.225 + 1.0, gaps
    assert result.status().state is TaskState.FAILED


def test_per_call_retry_policy_overrides_the_tasks(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    fail = app.task(name="rt.fail", max_retries=5, retry_policy=RetryPolicy(default_delay=30))(
        tasks.fail
    )
    log = str(tmp_path / "runs.jsonl")
    result = fail.apply_async(
        args=[log], retry_policy=RetryPolicy(max_retries=1, default_delay=0.01)
    )
    run_burst(app)
    assert len(tasks.read(log)) == 2
    assert result.status().state is TaskState.FAILED
    assert _reasons(app) == [(result.id, "max-retries-exhausted")]


@pytest.mark.parametrize("pool", POOLS)
def test_auto_retry_filters(make_app: AppFactory, tmp_path: Path, pool: str) -> None:
    app = make_app()
    only_key_errors = RetryPolicy(default_delay=0.01, auto_retry_for=(KeyError,))
    never_value_errors = RetryPolicy(default_delay=0.01, dont_auto_retry_for=("ValueError",))
    by_task = app.task(name="rt.fail_keys", pool=pool, max_retries=2, retry_policy=only_key_errors)(
        tasks.fail
    )
    plain = app.task(name="rt.fail", pool=pool, max_retries=2)(tasks.fail)
    cases = {
        # name: (result, expected runs)
        "auto-miss": (by_task.delay(str(tmp_path / "auto-miss"), "ValueError"), 1),
        "auto-hit": (by_task.delay(str(tmp_path / "auto-hit"), "KeyError"), 3),
        "dont-hit": (
            plain.apply_async(
                args=[str(tmp_path / "dont-hit"), "ValueError"], retry_policy=never_value_errors
            ),
            1,
        ),
        "dont-miss": (
            plain.apply_async(
                args=[str(tmp_path / "dont-miss"), "KeyError"], retry_policy=never_value_errors
            ),
            3,
        ),
    }

    run_burst(app, pool=pool)

    for name, (result, runs) in cases.items():
        assert len(tasks.read(tmp_path / name)) == runs, name
        status = result.status()
        assert status is not None and status.state is TaskState.FAILED, name
    assert all(reason != "nack" for _, reason in _reasons(app))
    assert len(_reasons(app)) == 4


@pytest.mark.parametrize("pool", POOLS)
def test_ctx_retry_then_success_with_retried_status_between(
    make_app: AppFactory, tmp_path: Path, pool: str
) -> None:
    app = make_app()
    retry_once = app.task(name="rt.retry_once", bind=True, pool=pool, max_retries=1)(
        tasks.retry_once
    )
    log = str(tmp_path / "attempts.jsonl")
    result = retry_once.delay(log, 0.6)

    with running(app, pool=pool):
        between = wait_for(
            lambda: (s := result.status()) and s.state is TaskState.RETRIED and s,
            timeout=15,
            message="the status never showed `retried` between the attempts",
        )
        final = result.wait(timeout=15)

    assert between.attempt == 0
    assert between.error is not None and between.error.type == "RetryRequested"
    assert final.state is TaskState.SUCCEEDED
    assert final.payload == 1
    assert final.attempt == 1
    attempts = tasks.read(log)
    assert [a["attempt"] for a in attempts] == [0, 1]
    assert attempts[1]["time"] - attempts[0]["time"] >= 0.6 - 0.01
    assert _reasons(app) == []  # a retry never passes through the dead-letter store


def test_automatic_retry_writes_retried_between_attempts(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = make_app()
    fail = app.task(name="rt.fail", max_retries=1, retry_policy=RetryPolicy(default_delay=0.6))(
        tasks.fail
    )
    result = fail.delay(str(tmp_path / "runs.jsonl"), "KeyError", "missing")
    with running(app):
        between = wait_for(
            lambda: (s := result.status()) and s.state is TaskState.RETRIED and s, timeout=10
        )
        final = result.wait(timeout=10)
    assert between.attempt == 0
    assert between.error is not None and between.error.type == "KeyError"
    assert between.error.retryable is True
    assert final.state is TaskState.FAILED and final.attempt == 1


@pytest.mark.parametrize("pool", POOLS)
def test_ctx_retry_when_exhausted_fails(make_app: AppFactory, tmp_path: Path, pool: str) -> None:
    app = make_app()
    no_retries = app.task(name="rt.retry_always", bind=True, pool=pool)(tasks.retry_always)
    log_zero = str(tmp_path / "zero.jsonl")
    log_two = str(tmp_path / "two.jsonl")
    zero = no_retries.delay(log_zero)
    two = no_retries.delay(log_two, 2)  # ctx.retry(max_retries=2)

    run_burst(app, pool=pool)

    assert [a["attempt"] for a in tasks.read(log_zero)] == [0]
    assert [a["attempt"] for a in tasks.read(log_two)] == [0, 1, 2]
    for result in (zero, two):
        status = result.status()
        assert status is not None and status.state is TaskState.FAILED
        assert status.error is not None and status.error.type == "RetryExhausted"
        assert status.meta.get("retryExhausted") is True
    assert all(reason != "nack" for _, reason in _reasons(app))
    assert app.broker.pending_count("default") + app.broker.delayed_count("default") == 0


def test_a_retry_that_expires_while_it_waits_is_cancelled(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """W-6: the retry carries the expiry, and the check happens at every receipt."""
    app = make_app()
    fail = app.task(name="rt.fail", max_retries=3, retry_policy=RetryPolicy(default_delay=0.4))(
        tasks.fail
    )
    log = str(tmp_path / "runs.jsonl")
    result = fail.apply_async(args=[log], expires=0.2)
    run_burst(app)
    assert len(tasks.read(log)) == 1
    status = result.status()
    assert status is not None and status.state is TaskState.CANCELLED
    assert status.error is not None and status.error.type == "TaskExpired"
    assert _reasons(app) == []
