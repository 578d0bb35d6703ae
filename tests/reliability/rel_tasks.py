"""The app of the reliability tests, loaded by ``stem-worker --app <this file>``.

``rel.record`` appends one line ``<task id> <run marker>`` to the execution log named
by ``STEM_REL_EXEC_LOG`` when its body starts (one ``os.write`` on an ``O_APPEND``
descriptor: lines of concurrent writers never interleave), sleeps 0-30 ms so that a
stop can land in the middle of it, and returns the marker. The marker names the
worker (``WORKER_NAME``, inherited by pool processes), the process and a per-process
counter, so every execution is told apart and a stored result can be traced back to
the run that produced it.
"""

from __future__ import annotations

import faulthandler
import itertools
import multiprocessing
import os
import random
import signal
import threading
import time
from typing import Any

from stem_sqlite import Stem, TaskContext

QUEUE = "rel"
TASK = "rel.record"

# A test that finds a worker stuck sends it SIGUSR1 to get the stacks of all its threads
# in its log (the worker process only: pool processes use SIGUSR1 for soft time limits).
if os.environ.get("STEM_REL_DUMP") == "1" and multiprocessing.parent_process() is None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)

app = Stem(record_queued=os.environ.get("STEM_REL_RECORD_QUEUED") == "1")

_counter = itertools.count(1)
_counter_lock = threading.Lock()


def run_marker() -> str:
    with _counter_lock:
        seq = next(_counter)
    return f"{os.environ.get('WORKER_NAME', '?')}/{os.getpid()}/{seq}"


def log_execution(task_id: str, marker: str) -> None:
    fd = os.open(os.environ["STEM_REL_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{task_id} {marker}\n".encode())
    finally:
        os.close(fd)


@app.task(name=TASK, queue=QUEUE, bind=True)
def record(ctx: TaskContext, n: int) -> dict[str, Any]:
    marker = run_marker()
    log_execution(ctx.id, marker)
    time.sleep(random.uniform(0, 0.03))
    return {"id": ctx.id, "n": n, "run": marker}
