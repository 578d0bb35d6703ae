"""Shutdown by signal (api.md section 9): the first SIGTERM/SIGINT is a warm shutdown,
a second one a hard shutdown whose unfinished job goes back to the queue at once."""

from __future__ import annotations

import signal
import time

from tests.cli.conftest import Cli
from tests.conftest import wait_for


def test_sigterm_lets_the_running_task_finish_and_exits_0(cli: Cli) -> None:
    task_id = cli.enqueue("stem.sleep", "2")
    proc = cli.worker("--name", "terminated")
    running = cli.wait_state(task_id, "running")
    assert running["meta"]["worker"] == "terminated"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, cli.log()
    status = cli.status(task_id)
    assert status is not None
    assert (status["state"], status["result"]) == ("succeeded", 2)
    assert status["meta"]["worker"] == "terminated"
    assert "warm shutdown" in cli.log()
    assert f"stem.sleep[{task_id}] succeeded" in cli.log()


def test_second_sigint_exits_promptly_and_the_job_is_redelivered_at_once(cli: Cli) -> None:
    task_seconds = 3.0
    task_id = cli.enqueue("stem.sleep", str(task_seconds))
    # Long leases: without an explicit release the job would stay invisible for 60 s.
    first = cli.worker("--name", "first", "--visibility-timeout", "60", log="first.log")
    cli.wait_state(task_id, "running")
    first.send_signal(signal.SIGINT)
    wait_for(
        lambda: "warm shutdown" in cli.log("first.log"),
        timeout=10,
        message=f"the first SIGINT was not reported: {cli.log('first.log')}",
    )
    assert first.poll() is None  # warm: still waiting for the task
    sent = time.monotonic()
    first.send_signal(signal.SIGINT)
    first.wait(timeout=10)
    elapsed = time.monotonic() - sent
    assert elapsed < task_seconds / 2, f"the hard shutdown took {elapsed:.2f}s"
    assert "hard shutdown" in cli.log("first.log")

    status = cli.status(task_id)
    assert status is not None and status["state"] != "succeeded"
    counts = cli.queues()["default"]
    assert (counts["pending"], counts["inflight"]) == (1, 0), counts  # released, not held

    started = time.monotonic()
    second = cli.worker("--name", "second", "--visibility-timeout", "60", log="second.log")
    done = cli.wait_state(task_id, "succeeded", timeout=30)
    # Far sooner than the 60 s lease of the first run could have expired.
    assert time.monotonic() - started < 30
    assert (done["result"], done["meta"]["worker"]) == (task_seconds, "second")
    assert cli.stop(second) == 0
