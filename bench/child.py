"""One measurement in a fresh process: ``python bench/child.py SYSTEM WORKLOAD N DIR``.

Prints one JSON object. Run by bench/run.py; each run gets fresh database files.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(HERE))

import raw  # noqa: E402

LATENCY_SAMPLES = 100
LATENCY_GAP = 0.05
DEPTH_CYCLES = 1000
DEPTH_BLOCKS = 5


def wait_until(check: Any, timeout: float, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("benchmark step timed out")


# -- stem -------------------------------------------------------------------------------


def stem_app() -> Any:
    import stem_app

    return stem_app


#: Queues a worker of W3's several-queue variant also consumes (empty; listed first).
OTHER_QUEUES = ["bench-other-1", "bench-other-2"]


def stem_worker(
    folder: Path,
    concurrency: int | None,
    multiplier: int | None = None,
    queues: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    argv = [str(BIN / "stem-worker"), "--app", str(HERE / "stem_app.py"), "-l", "WARNING"]
    for queue in queues or ["bench"]:
        argv += ["-Q", queue]
    if concurrency:
        argv += ["-c", str(concurrency)]
    if multiplier:
        argv += ["--prefetch-multiplier", str(multiplier)]
    return subprocess.Popen(
        argv,
        env={**os.environ, "BENCH_DIR": str(folder)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stem_done_counter(folder: Path) -> Any:
    path = folder / "stem_backend.sqlite"

    def done() -> int:
        if not path.exists():
            return 0
        conn = sqlite3.connect(path)
        try:
            return int(
                conn.execute(
                    "SELECT count(*) FROM stem_task_results WHERE state = 'succeeded'"
                ).fetchone()[0]
            )
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    return done


# -- huey -------------------------------------------------------------------------------


def huey_app() -> Any:
    import huey_app

    return huey_app


def huey_worker(folder: Path, concurrency: int | None) -> subprocess.Popen[bytes]:
    argv = [
        str(BIN / "huey_consumer"),
        "huey_app.huey",
        "-k",
        "thread",
        "-l",
        str(folder / "huey.log"),
    ]
    if concurrency:
        argv += ["-w", str(concurrency)]
    env = {**os.environ, "BENCH_DIR": str(folder), "PYTHONPATH": str(HERE)}
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def huey_done_counter(folder: Path) -> Any:
    path = folder / "huey.db"

    def done() -> int:
        conn = sqlite3.connect(path)
        try:
            return int(conn.execute("SELECT count(*) FROM kv").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    return done


# -- workloads ----------------------------------------------------------------------------


def w1_enqueue(system: str, n: int, folder: Path) -> dict[str, Any]:
    if system == "raw":
        conn = raw.connect(folder / "raw.sqlite")
        return {"rate": n / raw.enqueue(conn, n)}
    if system == "stem":
        app = stem_app()
        app.app.broker  # open before timing  # noqa: B018
        started = time.perf_counter()
        for i in range(n):
            app.noop.delay(i)
        return {"rate": n / (time.perf_counter() - started)}
    hueyapp = huey_app()
    hueyapp.huey.storage.conn  # noqa: B018
    started = time.perf_counter()
    for i in range(n):
        hueyapp.noop(i)
    return {"rate": n / (time.perf_counter() - started)}


def w1b_bulk(system: str, n: int, folder: Path, distinct: bool = False) -> dict[str, Any]:
    if system == "raw":
        conn = raw.connect(folder / "raw.sqlite")
        return {"rate": n / raw.enqueue_batched(conn, n)}
    if system == "stem":
        from stem_sqlite import EnqueueOptions
        from stem_sqlite.producer import build_envelope

        app = stem_app().app
        broker = app.broker
        options = EnqueueOptions()
        started = time.perf_counter()
        if distinct:
            # publish_many of envelopes built one by one, each with its own arguments.
            for start in range(0, n, 1000):
                broker.publish_many(
                    [
                        build_envelope("bench.noop", (i,), None, options, clock=app.clock)
                        for i in range(start, min(n, start + 1000))
                    ]
                )
        else:
            # The path of `stem-enqueue --count N`: one call, N copies, 1,000 per commit.
            envelope = build_envelope("bench.noop", (0,), None, options, clock=app.clock)
            for start in range(0, n, 1000):
                broker.publish_copies(envelope, min(1000, n - start))
        return {"rate": n / (time.perf_counter() - started)}
    raise SystemExit("no bulk path for " + system)


def prefill(system: str, n: int, folder: Path, name: str = "noop", delay: float = 0) -> None:
    if system == "stem":
        from datetime import UTC, datetime, timedelta

        from stem_sqlite import Envelope

        app = stem_app().app
        when = datetime.now(UTC) + timedelta(seconds=delay) if delay else None
        for start in range(0, n, 5000):
            app.broker.publish_many(
                [
                    Envelope(f"bench.{name}", (i,), queue="bench", not_before=when)
                    for i in range(start, min(n, start + 5000))
                ]
            )
        app.close()
    else:
        h = huey_app()
        task = getattr(h, name)
        storage = h.huey.storage
        if delay:  # Huey keeps tasks with an eta in its schedule table until they are due
            when = time.time() + delay
            rows = [(storage.name, h.huey.serialize_task(task.s(i)), when) for i in range(n)]
            statement = "insert into schedule (queue, data, timestamp) values (?, ?, ?)"
        else:
            rows = [(storage.name, h.huey.serialize_task(task.s(i)), 0) for i in range(n)]
            statement = "insert into task (queue, data, priority) values (?, ?, ?)"
        with storage.db(commit=True) as cursor:
            cursor.executemany(statement, rows)


def w2_drain(
    system: str, n: int, folder: Path, concurrency: int | None, multiplier: int | None = None
) -> dict[str, Any]:
    """Drain rate from the first stored result to the last, so that neither system's
    process start-up (imports, opening files) counts as draining."""
    if system == "raw":
        conn = raw.connect(folder / "raw.sqlite")
        raw.prefill(conn, n)
        started = time.perf_counter()
        while raw.claim_ack(conn):
            pass
        return {"rate": n / (time.perf_counter() - started)}
    prefill(system, n, folder)
    done = stem_done_counter(folder) if system == "stem" else huey_done_counter(folder)
    if system == "stem":
        worker = stem_worker(folder, concurrency, multiplier)
    else:
        worker = huey_worker(folder, concurrency)
    try:
        first = wait_until(lambda: done() or None, timeout=60, every=0.01)
        started = time.perf_counter()
        wait_until(lambda: done() >= n, timeout=300, every=0.01)
        elapsed = time.perf_counter() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    return {"rate": (n - first) / elapsed}


def w3_latency(system: str, n: int, folder: Path, several: bool = False) -> dict[str, Any]:
    """Enqueue-to-start latency; ``several``: the worker also consumes two empty queues."""
    stamps = folder / "stamps.txt"
    stamps.touch()
    os.environ["BENCH_STAMPS"] = str(stamps)
    os.environ["BENCH_DIR"] = str(folder)
    if system == "stem":
        app = stem_app()
        queues = [*OTHER_QUEUES, "bench"] if several else None
        worker = stem_worker(folder, None, queues=queues)
        enqueue = app.stamp.delay
        app.app.broker  # noqa: B018
    else:
        h = huey_app()
        worker = huey_worker(folder, None)
        enqueue = h.stamp
    try:
        enqueue(-1)  # proves the consumer is up
        wait_until(lambda: stamps.read_text().strip(), timeout=60)
        time.sleep(0.5)
        rng = random.Random(7)
        sent: dict[int, float] = {}
        for i in range(LATENCY_SAMPLES):
            time.sleep(rng.expovariate(1 / LATENCY_GAP))
            sent[i] = time.time()
            enqueue(i)
        wait_until(lambda: len(stamps.read_text().splitlines()) > LATENCY_SAMPLES, timeout=120)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    latencies = []
    for line in stamps.read_text().splitlines():
        i, at = line.split()
        if int(i) >= 0:
            latencies.append((float(at) - sent[int(i)]) * 1000)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {"p50": pct(50), "p95": pct(95), "p99": pct(99)}


def w4_depth(system: str, depth: int, folder: Path, delayed: bool) -> dict[str, Any]:
    """µs per (enqueue 1, claim+ack 1) cycle with ``depth`` jobs waiting (pending or delayed)."""
    delay = 3600.0 if delayed else 0.0
    if system == "raw":
        conn = raw.connect(folder / "raw.sqlite")
        if depth:
            raw.prefill(conn, depth, delay)

        def cycle() -> None:
            conn.execute(raw.INSERT, (time.time(), raw.payload(0)))
            raw.claim_ack(conn)
    elif system == "stem":
        from stem_sqlite import Envelope

        if depth:
            prefill("stem", depth, folder, delay=delay)
        app = stem_app().app
        consumer = app.broker.consume("bench", prefetch=1)

        def cycle() -> None:
            app.broker.publish(Envelope("bench.noop", (0,), queue="bench"))
            delivery = consumer.receive(timeout=0)
            assert delivery is not None
            app.broker.ack(delivery)
    else:
        h = huey_app()
        if depth:
            prefill("huey", depth, folder, delay=delay)

        def cycle() -> None:
            h.noop(0)
            h.huey.dequeue()

    warm = time.monotonic() + 0.5
    while time.monotonic() < warm:
        cycle()
    # The median of several short blocks: one stall (a checkpoint, the page cache) in a
    # block of a fraction of a second would otherwise decide the whole figure.
    blocks = []
    for _ in range(DEPTH_BLOCKS):
        started = time.perf_counter()
        for _ in range(DEPTH_CYCLES):
            cycle()
        blocks.append((time.perf_counter() - started) / DEPTH_CYCLES * 1e6)
    return {"us": statistics.median(blocks)}


def w5_idle(system: str, folder: Path, seconds: float = 10.0) -> dict[str, Any]:
    worker = stem_worker(folder, None)
    try:
        wait_until(lambda: (folder / "stem_backend.sqlite").exists(), timeout=30)
        time.sleep(1.0)  # start-up done: pool threads parked, first heartbeat stored

        def cpu() -> float:
            fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu()
        time.sleep(seconds)
        used = cpu() - before
        rss_kb = next(
            int(line.split()[1])
            for line in Path(f"/proc/{worker.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    return {"cpu_percent": used / seconds * 100, "rss_mb": rss_kb / 1024}


def main() -> None:
    system, workload, n, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    os.environ["BENCH_DIR"] = str(folder)
    extra = sys.argv[5] if len(sys.argv) > 5 else ""
    if workload == "enqueue":
        result = w1_enqueue(system, n, folder)
    elif workload == "bulk":
        result = w1b_bulk(system, n, folder, distinct=extra == "distinct")
    elif workload == "drain":
        concurrency, _, multiplier = extra.partition(":")
        result = w2_drain(
            system,
            n,
            folder,
            int(concurrency) if concurrency else None,
            int(multiplier) if multiplier else None,
        )
    elif workload == "latency":
        result = w3_latency(system, n, folder, several=extra == "3q")
    elif workload == "depth":
        result = w4_depth(system, n, folder, delayed=extra == "delayed")
    elif workload == "idle":
        result = w5_idle(system, folder)
    else:
        raise SystemExit(f"unknown workload {workload}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
