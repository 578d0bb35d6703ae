"""The worker's log: a banner, then a line per task outcome, as text or JSON lines."""

from __future__ import annotations

import json
import re

from tests.cli.conftest import Cli


def test_json_log_format_writes_json_lines_per_event(cli: Cli) -> None:
    cli.write_app()
    ok = cli.enqueue("stem.echo", "logged")
    bad = cli.enqueue("demo.boom", "--app", "tasks.py")
    log = cli.burst("--app", "tasks.py", "-Q", "default", "-Q", "math", "--log-format", "json")
    records = [json.loads(line) for line in log.splitlines()]  # every line is JSON
    ready = [r for r in records if r.get("event") == "ready"]
    assert len(ready) == 1
    assert ready[0]["broker"] == str(cli.broker) and ready[0]["backend"] == str(cli.backend)
    assert ready[0]["queues"] == ["default", "math"] and "demo.boom" in ready[0]["tasks"]
    events = {(r.get("id"), r.get("event")): r for r in records}
    assert events[(ok, "received")]["task"] == "stem.echo"
    succeeded = events[(ok, "succeeded")]
    assert succeeded["queue"] == "default" and succeeded["duration"] >= 0
    assert succeeded["level"] == "info" and succeeded["time"]
    failed = events[(bad, "failed")]
    assert failed["level"] == "warning" and "ValueError" in failed["error"]
    assert failed["duration"] >= 0


def test_text_log_shows_a_line_per_outcome_with_its_duration(cli: Cli) -> None:
    cli.write_app()
    ok = cli.enqueue("stem.echo", "logged")
    bad = cli.enqueue("demo.boom", "--app", "tasks.py")
    retried = cli.enqueue("demo.boom", "--app", "tasks.py", "--max-retries", "1")
    log = cli.burst("--app", "tasks.py", "-Q", "default", "-Q", "math")
    # The banner, one plain line when stderr is not a terminal, with the absolute paths.
    banner = [line for line in log.splitlines() if " ready: " in line]
    assert len(banner) == 1
    assert f"broker={cli.broker}" in banner[0] and f"backend={cli.backend}" in banner[0]
    assert "queues=default,math" in banner[0] and "demo.add" in banner[0]
    duration = r" in \d+\.\d{3}s"
    assert re.search(rf"stem\.echo\[{ok}\] received$", log, re.M)
    assert re.search(rf"stem\.echo\[{ok}\] succeeded{duration}$", log, re.M)
    assert re.search(
        rf"WARNING .*demo\.boom\[{bad}\] failed{duration}: ValueError: boom$", log, re.M
    )
    assert re.search(rf"demo\.boom\[{retried}\] retried{duration}: ValueError: boom$", log, re.M)
    assert not any(line.startswith("{") for line in log.splitlines())
