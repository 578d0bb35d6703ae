"""stem-enqueue, stem-worker and `stem result` end to end, one test per argument form
(api.md section 9, issue 4 items 2, 4 and 5)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

from tests.cli.conftest import Cli


def received_order(log: str) -> list[str]:
    """Task ids in the order the worker logged them as received."""
    return re.findall(r"\[([^\]]+)\] received", log)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_positional_values_are_json_when_they_parse_else_strings(cli: Cli) -> None:
    task_id = cli.enqueue(
        "stem.echo", "hello", "42", "1.5", "true", "null", "[1, 2]", '{"a": 1}', '"7"', "two words"
    )
    cli.burst()
    status = cli.status(task_id)
    assert status is not None
    assert status["state"] == "succeeded"
    assert status["result"] == ["hello", 42, 1.5, True, None, [1, 2], {"a": 1}, "7", "two words"]


def test_key_value_pairs_become_keyword_arguments(cli: Cli) -> None:
    task_id = cli.enqueue("stem.echo", "1", "x=2", "name=bob", "flag=true", "items=[1, 2]")
    cli.burst()
    status = cli.status(task_id)
    assert status is not None and status["state"] == "succeeded"
    assert status["result"] == {
        "args": [1],
        "kwargs": {"x": 2, "name": "bob", "flag": True, "items": [1, 2]},
    }


def test_kwargs_json_is_merged_with_key_value_pairs(cli: Cli) -> None:
    task_id = cli.enqueue("stem.echo", "--kwargs", '{"a": {"b": [1, 2]}, "c": "text"}', "d=4")
    cli.burst()
    status = cli.status(task_id)
    assert status is not None and status["state"] == "succeeded"
    assert status["result"] == {"args": [], "kwargs": {"a": {"b": [1, 2]}, "c": "text", "d": 4}}


def test_queue_option_puts_the_job_on_that_queue_only(cli: Cli) -> None:
    task_id = cli.enqueue("stem.echo", "routed", "-Q", "reports")
    assert cli.queues()["reports"]["pending"] == 1
    cli.burst("-Q", "default")  # a worker of another queue leaves it alone
    assert cli.status(task_id) is None
    assert cli.queues()["reports"]["pending"] == 1
    cli.burst("--queue", "reports")
    status = cli.status(task_id)
    assert status is not None and status["state"] == "succeeded"
    assert status["result"] == ["routed"]
    assert status["meta"]["queue"] == "reports"


def test_priority_runs_the_higher_one_first(cli: Cli) -> None:
    low = cli.enqueue("stem.echo", "low")
    middle = cli.enqueue("stem.echo", "middle", "--priority", "5")
    high = cli.enqueue("stem.echo", "high", "--priority", "9")
    log = cli.burst("-c", "1")
    assert received_order(log) == [high, middle, low]
    statuses = cli.statuses()
    assert [statuses[i]["result"] for i in (low, middle, high)] == [["low"], ["middle"], ["high"]]


def test_countdown_delays_the_run(cli: Cli) -> None:
    before = datetime.now(UTC)
    task_id = cli.enqueue("stem.echo", "later", "--countdown", "1.5")
    counts = cli.queues()["default"]
    assert (counts["delayed"], counts["pending"]) == (1, 0)
    cli.burst()
    status = cli.status(task_id)
    assert status is not None and status["state"] == "succeeded"
    assert when(status["meta"]["startedAt"]) >= before + timedelta(seconds=1.5)


def test_eta_with_a_timezone_delays_the_run(cli: Cli) -> None:
    plus_one = timezone(timedelta(hours=1))
    eta = datetime.now(plus_one) + timedelta(seconds=1.5)
    eta = eta.replace(microsecond=eta.microsecond // 1000 * 1000)  # times are stored in ms
    task_id = cli.enqueue("stem.echo", "at", "--eta", eta.isoformat(timespec="milliseconds"))
    counts = cli.queues()["default"]
    assert (counts["delayed"], counts["pending"]) == (1, 0)
    cli.burst()
    status = cli.status(task_id)
    assert status is not None and status["state"] == "succeeded"
    assert when(status["meta"]["startedAt"]) >= eta


def test_expires_cancels_a_job_that_expired_before_it_ran(cli: Cli) -> None:
    expired = cli.enqueue("stem.echo", "too late", "--expires", "0")
    expired_iso = cli.enqueue("stem.echo", "too late", "--expires", "2001-01-01T00:00:00Z")
    fresh = cli.enqueue("stem.echo", "in time", "--expires", "60")
    cli.burst()
    statuses = cli.statuses()
    for task_id in (expired, expired_iso):
        assert statuses[task_id]["state"] == "cancelled"
        assert statuses[task_id]["result"] is None
        assert statuses[task_id]["error"]["type"] == "TaskExpired"
    assert statuses[fresh]["state"] == "succeeded"
    assert statuses[fresh]["result"] == ["in time"]


def test_task_id_reuse_replaces_a_pending_job(cli: Cli) -> None:
    assert cli.enqueue("stem.echo", "first", "--task-id", "job-1", "--countdown", "60") == "job-1"
    assert cli.enqueue("stem.echo", "second", "--task-id", "job-1") == "job-1"
    counts = cli.queues()["default"]
    assert (counts["pending"], counts["delayed"]) == (1, 0)
    log = cli.burst()
    assert received_order(log) == ["job-1"]
    status = cli.status("job-1")
    assert status is not None and status["state"] == "succeeded"
    assert status["result"] == ["second"]


def test_max_retries_overrides_the_task_default(cli: Cli) -> None:
    cli.write_app()
    retried = cli.enqueue("demo.boom", "--app", "tasks.py", "--max-retries", "2")
    default = cli.enqueue("demo.boom", "--app", "tasks.py")
    log = cli.burst("--app", "tasks.py")
    statuses = cli.statuses()
    assert (statuses[retried]["state"], statuses[retried]["attempt"]) == ("failed", 2)
    assert (statuses[default]["state"], statuses[default]["attempt"]) == ("failed", 0)
    assert statuses[retried]["error"]["type"] == "ValueError"
    assert log.count(f"[{retried}] retried") == 2
    assert f"[{default}] retried" not in log


def test_ignore_result_stores_no_return_value(cli: Cli) -> None:
    kept = cli.enqueue("stem.echo", "keep")
    ignored = cli.enqueue("stem.echo", "drop", "--ignore-result")
    cli.burst()
    statuses = cli.statuses()
    assert (statuses[kept]["state"], statuses[kept]["result"]) == ("succeeded", ["keep"])
    assert (statuses[ignored]["state"], statuses[ignored]["result"]) == ("succeeded", None)


def test_count_prints_one_id_per_line_and_every_copy_runs(cli: Cli) -> None:
    ids = cli.ok("stem-enqueue", "stem.echo", "copy", "--count", "5").splitlines()
    assert len(ids) == 5 and len(set(ids)) == 5
    as_json = json.loads(cli.ok("stem-enqueue", "stem.echo", "copy", "--count", "3", "--json"))
    assert len(as_json["ids"]) == 3 and not set(as_json["ids"]) & set(ids)
    assert cli.queues()["default"]["pending"] == 8
    cli.burst("-c", "2")
    statuses = cli.statuses()
    for task_id in [*ids, *as_json["ids"]]:
        assert statuses[task_id]["state"] == "succeeded"
        assert statuses[task_id]["result"] == ["copy"]


def test_json_output_gives_the_id(cli: Cli) -> None:
    printed = json.loads(cli.ok("stem-enqueue", "stem.echo", "j", "--json"))
    assert set(printed) == {"id"}
    cli.burst()
    status = cli.status(printed["id"])
    assert status is not None and status["result"] == ["j"]


def test_wait_prints_the_result_and_exits_1_when_the_task_failed(cli: Cli) -> None:
    cli.write_app()
    cli.worker("--app", "tasks.py", "-Q", "default", "-Q", "math", "-c", "2")
    done = cli.run("stem-enqueue", "stem.echo", "hello", "--wait", "--timeout", "30")
    assert (done.returncode, done.stdout) == (0, '["hello"]\n'), done.stderr
    done = cli.run("stem-enqueue", "demo.add", "2", "3", "--app", "tasks.py", "--wait")
    assert (done.returncode, done.stdout) == (0, "5\n"), done.stderr
    done = cli.run("stem-enqueue", "stem.echo", "x=1", "--wait", "--json", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert (printed["state"], printed["result"]) == ("succeeded", {"args": [], "kwargs": {"x": 1}})
    done = cli.run("stem-enqueue", "demo.boom", "kaput", "--app", "tasks.py", "--wait")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "ValueError: kaput" in done.stderr
    done = cli.run("stem-enqueue", "demo.boom", "--app", "tasks.py", "--wait", "--json")
    assert done.returncode == 1
    printed = json.loads(done.stdout)
    assert printed["state"] == "failed" and printed["error"]["type"] == "ValueError"


def test_wait_times_out_with_exit_1_when_no_worker_runs(cli: Cli) -> None:
    done = cli.run("stem-enqueue", "stem.echo", "--wait", "--timeout", "0.3")
    assert done.returncode == 1
    assert "0.3" in done.stderr


def test_builtin_tasks_work_without_an_app(cli: Cli) -> None:
    echo = cli.enqueue("stem.echo", "hi", "there")
    nap = cli.enqueue("stem.sleep", "seconds=0.2")
    log = cli.burst()
    assert "stem.echo" in log and "stem.sleep" in log  # the banner names the built-ins
    statuses = cli.statuses()
    assert (statuses[echo]["state"], statuses[echo]["result"]) == ("succeeded", ["hi", "there"])
    assert (statuses[nap]["state"], statuses[nap]["result"]) == ("succeeded", 0.2)


def test_enqueue_with_app_refuses_an_unknown_name_with_a_suggestion(cli: Cli) -> None:
    cli.write_app()
    done = cli.run("stem-enqueue", "demo.ad", "1", "2", "--app", "tasks.py")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "demo.ad" in lines[0] and "did you mean demo.add" in lines[0]
    assert not cli.broker.exists()


def test_enqueue_with_app_checks_the_arguments(cli: Cli) -> None:
    cli.write_app()
    for args, named in ((["1"], "'y'"), (["1", "2", "3"], "argument"), (["1", "2", "z=3"], "'z'")):
        done = cli.run("stem-enqueue", "demo.add", *args, "--app", "tasks.py")
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "demo.add" in lines[0] and named in lines[0], done.stderr
        assert "Traceback" not in done.stderr
    assert not cli.broker.exists()
    # The same call with matching arguments is accepted and lands on the task's queue.
    task_id = cli.enqueue("demo.add", "1", "y=2", "--app", "tasks.py")
    assert cli.queues()["math"]["pending"] == 1
    cli.burst("--app", "tasks.py")
    status = cli.status(task_id)
    assert status is not None and status["result"] == 3


def test_burst_exits_0_once_the_queues_are_empty(cli: Cli) -> None:
    cli.burst()  # nothing to do at all
    ids = [cli.enqueue("stem.echo", str(n)) for n in range(3)]
    log = cli.burst("-c", "2")
    assert "stopped" in log
    for counts in cli.queues().values():
        assert (counts["pending"], counts["inflight"], counts["delayed"]) == (0, 0, 0)
    statuses = cli.statuses()
    assert [statuses[i]["result"] for i in ids] == [[0], [1], [2]]
