"""The task_context_mixed example: every way a task can enqueue, retry and link, on SQLite.

A port of the original Stem example of the same name. Run it end to end with
``./dev demo`` (or ``python -m task_context_mixed.demo``); see README.md here.
"""

MIXED_QUEUE = "task-context-mixed"
#: The base of the example's own file names: task_context_mixed_broker.sqlite and
#: task_context_mixed_backend.sqlite, with the environment rules of api.md section 8.
PATH_BASE = "task_context_mixed"
