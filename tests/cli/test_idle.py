"""A stem-worker with nothing to do waits; it does not spin on the broker."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.cli.conftest import Cli


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_idle_worker_uses_little_cpu(cli: Cli) -> None:
    proc = cli.worker("--name", "idle-1")
    cli.wait_ready()
    start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(1.5)  # measuring CPU use over a period, not waiting for a state
    used = (cpu_seconds(proc.pid) - start_cpu) / (time.monotonic() - start)
    assert cli.stop(proc) == 0
    assert used < 0.25, f"an idle worker used {used:.0%} of a CPU"
