"""The example's producer: ``python -m task_context_mixed.enqueue [--fail] [--overwrite]``.

It opens only the broker file: the worker is the single writer of the backend.
``--fail`` makes demo.flaky fail for good (so its link_error runs); ``--overwrite``
enqueues twice under the fixed id ``task-context-mixed``, and the second replaces
the first while it is still pending.
"""

from __future__ import annotations

import sys
import time

from stem_sqlite import EnqueueOptions, JobInFlight

from . import MIXED_QUEUE
from .tasks import app

OVERWRITE_ID = "task-context-mixed"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    unknown = [a for a in args if a not in ("--fail", "--overwrite")]
    if unknown:
        print(f"enqueue: unknown option {unknown[0]} (use --fail, --overwrite)", file=sys.stderr)
        return 2
    force_fail = "--fail" in args
    overwrite = "--overwrite" in args
    run_id = str(int(time.time() * 1000))
    task_id = OVERWRITE_ID if overwrite else None
    options = EnqueueOptions(task_id=task_id, queue=MIXED_QUEUE)
    first = app.enqueue(
        "demo.inline_parent", kwargs={"runId": run_id, "forceFail": force_fail}, options=options
    )
    print(f"Enqueued demo.inline_parent id={first.id} runId={run_id} forceFail={force_fail}")
    if overwrite:
        # Re-using the id of a pending job replaces it in place. If a worker already
        # took the first one, the broker refuses to break its lease: say so.
        try:
            second = app.enqueue(
                "demo.inline_parent",
                kwargs={"runId": f"{run_id}_overwrite", "forceFail": force_fail},
                options=options,
            )
        except JobInFlight:
            print(f"Not overwritten: task id={task_id} is already running")
        else:
            print(f"Overwrote task id={second.id}")
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
