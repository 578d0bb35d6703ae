"""The example's worker: ``python -m task_context_mixed.worker``.

Queue ``task-context-mixed``, concurrency 2, prefetch multiplier 1, named by
``WORKER_NAME`` (default ``task-context-worker``); stops warm on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import os
import sys

from stem_sqlite import Worker

from . import MIXED_QUEUE
from .tasks import app


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] %(levelname)-7s %(message)s", stream=sys.stderr
    )
    paths = app.paths
    worker = Worker(
        app,
        queues=[MIXED_QUEUE],
        concurrency=2,
        prefetch_multiplier=1,
        name=os.environ.get("WORKER_NAME", "").strip() or "task-context-worker",
    )
    print(
        f"Worker started. SQLite broker: {os.path.abspath(paths.broker)} "
        f"backend: {os.path.abspath(paths.backend)}",
        flush=True,
    )
    worker.run()
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
