"""The example's tasks. Workers load this module (``--app task_context_mixed.tasks``).

The app binds no paths: a worker or producer resolves them (flags, then the
environment, with this example's own default names) before anything is opened.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stem_sqlite import EnqueueOptions, RetryPolicy, Stem, TaskContext

from . import MIXED_QUEUE, PATH_BASE

app = Stem(name="task-context-mixed", default_base=PATH_BASE)


def say(text: str) -> None:
    print(text, flush=True)


@app.task(name="demo.audit", queue=MIXED_QUEUE, bind=True)
def audit(ctx: TaskContext, runId: str, message: str) -> None:
    """Records a breadcrumb from a nested task."""
    say(f"[audit] id={ctx.id} runId={runId} message={message}")


@app.task(name="demo.on_success", queue=MIXED_QUEUE, bind=True)
def on_success(ctx: TaskContext, runId: str, source: str) -> None:
    """Runs as the link of demo.flaky when it succeeds."""
    say(f"[link_success] id={ctx.id} runId={runId} source={source}")


@app.task(name="demo.on_error", queue=MIXED_QUEUE, bind=True)
def on_error(ctx: TaskContext, runId: str, source: str) -> None:
    """Runs as the link_error of demo.flaky when it fails for good."""
    say(f"[link_error] id={ctx.id} runId={runId} source={source}")


def _now() -> datetime:
    return datetime.now(UTC)


FLAKY_ENQUEUE_POLICY = RetryPolicy(
    backoff=True, backoff_max=3, default_delay=0.2, jitter=True, max_retries=2
)


@app.task(
    name="demo.inline_parent",
    queue=MIXED_QUEUE,
    bind=True,
    priority=3,
    max_retries=1,
    rate_limit="30/m",
    retry_policy=RetryPolicy(backoff=True, default_delay=0.25, jitter=True),
)
def inline_parent(
    ctx: TaskContext, runId: str | None = None, forceFail: bool = False
) -> dict[str, str]:
    """Enqueues nested tasks every way the context allows; returns their ids."""
    run_id = runId or str(int(_now().timestamp() * 1000))
    say(f"[inline_parent] id={ctx.id} attempt={ctx.attempt} runId={run_id}")

    # eta + ignore_result, and no lineage: the child is not added to this parent.
    inline_id = ctx.enqueue(
        "demo.inline_entrypoint",
        kwargs={"runId": run_id},
        headers={"x-demo": "inline-entrypoint"},
        meta={"source": "inline-parent"},
        options=EnqueueOptions(
            queue=MIXED_QUEUE, eta=_now() + timedelta(milliseconds=300), ignore_result=True
        ),
        add_to_parent=False,
    )
    # countdown + expires, with lineage (stem.parentTaskId / stem.rootTaskId).
    isolate_id = ctx.spawn(
        "demo.isolate_child",
        kwargs={"runId": run_id},
        options=EnqueueOptions(
            queue=MIXED_QUEUE, countdown=0.5, expires=_now() + timedelta(minutes=2)
        ),
        add_to_parent=True,
    )
    audit_id = ctx.enqueue(
        "demo.audit",
        kwargs={"runId": run_id, "message": "inline parent scheduled child tasks"},
    )
    # The whole apply_async surface; the informational options land in the meta.
    flaky_id = ctx.enqueue(
        "demo.flaky",
        kwargs={"runId": run_id, "forceFail": forceFail},
        meta={
            "publishConnection": {"adapter": "sqlite"},
            "producer": {"app": "task-context-mixed"},
        },
        options=EnqueueOptions(
            task_id=f"flaky-{run_id}",
            queue=MIXED_QUEUE,
            exchange="demo-exchange",
            routing_key="demo.flaky",
            priority=9,
            time_limit=8,
            soft_time_limit=4,
            serializer="json",
            compression="gzip",
            ignore_result=False,
            shadow="demo.flaky",
            reply_to="demo.reply",
            retry=True,
            retry_policy=FLAKY_ENQUEUE_POLICY,
            link=on_success.s(runId=run_id, source="link"),
            link_error=on_error.s(runId=run_id, source="link_error"),
        ),
    )
    say(
        f"[inline_parent] queued inline={inline_id} isolate={isolate_id} "
        f"audit={audit_id} flaky={flaky_id}"
    )
    return {"inline": inline_id, "isolate": isolate_id, "audit": audit_id, "flaky": flaky_id}


@app.task(name="demo.inline_entrypoint", queue=MIXED_QUEUE, bind=True)
def inline_entrypoint(ctx: TaskContext, runId: str = "unknown") -> str:
    """Runs in the worker's thread pool and enqueues an audit with a higher priority."""
    say(f"[inline_entrypoint] id={ctx.id} attempt={ctx.attempt} runId={runId} meta={ctx.meta}")
    ctx.enqueue(
        "demo.audit",
        kwargs={"runId": runId, "message": "inline entrypoint completed"},
        options=EnqueueOptions(priority=4),
    )
    return "inline-ok"


@app.task(name="demo.isolate_child", queue=MIXED_QUEUE, bind=True, pool="processes")
def isolate_child(ctx: TaskContext, runId: str = "unknown") -> str:
    """Runs in a pool process; its enqueue travels to the worker, the only writer."""
    say(f"[isolate_child] id={ctx.id} attempt={ctx.attempt} runId={runId}")
    ctx.enqueue(
        "demo.audit",
        kwargs={"runId": runId, "message": "isolate child enqueued from a pool process"},
        headers={"x-child": "isolate"},
        meta={"origin": "isolate-child"},
        options=EnqueueOptions(countdown=0.2, shadow="audit-shadow"),
    )
    return "isolate-ok"


@app.task(
    name="demo.flaky",
    queue=MIXED_QUEUE,
    bind=True,
    max_retries=2,
    retry_policy=RetryPolicy(backoff=True, backoff_max=5, default_delay=0.15, jitter=True),
)
def flaky(ctx: TaskContext, runId: str = "unknown", forceFail: bool = False) -> dict[str, Any]:
    """Asks for one retry on its first attempt and succeeds on the next; always fails
    when ``forceFail`` is set, so its link_error runs."""
    say(f"[flaky] id={ctx.id} attempt={ctx.attempt} runId={runId} forceFail={forceFail}")
    if forceFail:
        raise RuntimeError(f"Forced failure for runId={runId}")
    if ctx.attempt < 1:
        ctx.retry(
            countdown=0.3,
            retry_policy=RetryPolicy(backoff=True, default_delay=0.2, jitter=True, max_retries=2),
            max_retries=2,
            time_limit=6,
            soft_time_limit=3,
        )
    return {"runId": runId, "status": "ok"}
