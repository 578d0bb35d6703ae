"""Task bodies of the canvas tests, and the app the worker processes load.

``stem-worker --app tests/canvas/canvas_tasks.py --broker ... --backend ...`` loads the
module-level ``app`` (its paths are bound by the worker's flags). The test process
registers the same tasks on its own app with :func:`register`. Worker processes share
no memory with the test, so every body reports what it did by appending one JSON line
to a file (small appends are atomic).
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from stem_sqlite import RetryPolicy, Stem, TaskContext

#: No delay between retries, so exhausted retries are quick.
NO_DELAY = RetryPolicy(default_delay=0, jitter=False)


def append(path: str, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def _wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


# -- members ----------


def jitter(path: str, i: int, max_sleep: float) -> int:
    """Sleep a random small time (so members finish out of order); return i*i."""
    time.sleep(random.uniform(0, max_sleep))
    append(path, {"i": i, "pid": os.getpid(), "t": time.time()})
    return i * i


def square(path: str, i: int) -> int:
    append(path, {"i": i, "pid": os.getpid()})
    return i * i


def gated(path: str, gate: str, tag: str, i: int) -> str:
    """Wait for the gate file, then until the wall-clock time written in it (if any),
    so that many members end at the same moment."""
    _wait_until(lambda: os.path.exists(gate), 30, f"gate {gate}")
    with open(gate, encoding="utf-8") as fh:  # the gate appears whole (os.replace)
        text = fh.read()
    if text.strip():
        time.sleep(max(0.0, float(text) - time.time()))
    append(path, {"tag": tag, "i": i, "pid": os.getpid()})
    return f"{tag}:{i}"


def concat(prev: str, suffix: str, path: str) -> str:
    """A chain step: the previous result comes first."""
    append(path, {"prev": prev, "suffix": suffix, "pid": os.getpid()})
    return prev + suffix


def boom(ctx: TaskContext, path: str, tag: str) -> None:
    """Fail every attempt (bound, to record the attempt)."""
    append(path, {"tag": tag, "attempt": ctx.attempt, "pid": os.getpid()})
    raise ValueError(f"boom {tag}")


def explode(prev: Any, path: str, tag: str) -> None:
    """A chain step that fails (no retries)."""
    append(path, {"tag": tag, "prev": prev, "pid": os.getpid()})
    raise RuntimeError(f"explode {tag}")


def retry_always(ctx: TaskContext, path: str, tag: str) -> None:
    """Ask for a retry on every attempt, until the retries run out."""
    append(path, {"tag": tag, "attempt": ctx.attempt, "pid": os.getpid()})
    ctx.retry(countdown=0.01)


def spawner(ctx: TaskContext, path: str, i: int, children: int) -> str:
    """Enqueue ``children`` child tasks, wait until they have all finished, then end."""
    ids = [ctx.enqueue("canvas.child", args=[path, i, j]) for j in range(children)]
    append(path, {"kind": "member", "i": i, "child_ids": ids, "pid": os.getpid()})

    def done() -> bool:
        return sum(1 for r in read(path) if r.get("kind") == "child" and r["i"] == i) >= children

    _wait_until(done, 30, f"children of member {i}")
    return f"member-{i}"


def child(path: str, i: int, j: int) -> str:
    append(path, {"kind": "child", "i": i, "j": j, "pid": os.getpid()})
    return f"child-{i}-{j}"


# -- callbacks ----------


def collect(results: list[Any], path: str, tag: str) -> list[Any]:
    """A chord callback: record every execution (with its results), return them."""
    append(path, {"tag": tag, "results": results, "pid": os.getpid()})
    return results


def tsum(results: list[int], path: str, tag: str) -> int:
    append(path, {"tag": tag, "results": results, "pid": os.getpid()})
    return sum(results)


def on_error(path: str, tag: str) -> str:
    """A link_error callback: runs with exactly its own signature's arguments."""
    append(path, {"tag": tag, "pid": os.getpid()})
    return tag


def register(app: Stem) -> dict[str, Any]:
    """Register every task on ``app``; returns them by short name."""
    tasks = {
        "jitter": app.task(name="canvas.jitter")(jitter),
        "square": app.task(name="canvas.square")(square),
        "gated": app.task(name="canvas.gated")(gated),
        "concat": app.task(name="canvas.concat")(concat),
        "boom": app.task(name="canvas.boom", bind=True, retry_policy=NO_DELAY)(boom),
        "explode": app.task(name="canvas.explode")(explode),
        "retry_always": app.task(name="canvas.retry_always", bind=True)(retry_always),
        "spawner": app.task(name="canvas.spawner", bind=True)(spawner),
        "child": app.task(name="canvas.child")(child),
        "collect": app.task(name="canvas.collect")(collect),
        "tsum": app.task(name="canvas.tsum")(tsum),
        "on_error": app.task(name="canvas.on_error")(on_error),
    }
    return tasks


app = Stem()
register(app)
