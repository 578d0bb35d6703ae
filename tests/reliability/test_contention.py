"""Contention (issue 9, item 2): 4 producer processes and 2 ``stem-worker`` processes on
the same broker and backend files for about 30 seconds.

The producers enqueue one job at a time through ``rel_tasks.record.delay`` (each also
records ``queued`` in the backend, so both files see writers from six processes), in
bursts of random size paced over the run. The workers (one thread pool, one process
pool, two slots each) hold 60 s leases, so nothing may run twice. Then: no lock error
and no traceback in any process's output, every produced job ran exactly once and is
stored as succeeded, nothing is left in the broker, both files pass integrity_check.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from typing import Any

import pytest

from stem_sqlite import TaskState
from tests.conftest import wait_for
from tests.reliability.conftest import forbidden_lines, summary, wait_exit

PRODUCERS = 4
PER_PRODUCER = 450
PRODUCE_SECONDS = 27.0
VISIBILITY = 60.0

# argv: producer index, job count, seconds, ids file. Publishes one job at a time in
# bursts of 1-40 jobs, sleeping between bursts to spread them over `seconds`; writes
# each id to the ids file as soon as its enqueue returned.
PRODUCER = r"""
import random, sys, time
from tests.reliability import rel_tasks

index, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
ids_path = sys.argv[4]
rng = random.Random(index)
start = time.monotonic()
done = 0
with open(ids_path, "w", buffering=1) as out:
    while done < count:
        for _ in range(min(rng.randint(1, 40), count - done)):
            out.write(rel_tasks.record.delay(index * 100_000 + done).id + "\n")
            done += 1
        time.sleep(max(0.0, start + seconds * done / count - time.monotonic()))
rel_tasks.app.close()
print(f"producer {index}: {done} jobs in {time.monotonic() - start:.1f}s")
"""


@pytest.mark.timeout(120)
def test_four_producers_and_two_workers_share_the_files(make_cluster: Any) -> None:
    cluster = make_cluster(VISIBILITY)
    started = time.monotonic()
    workers = [cluster.start_worker(pool, concurrency=2) for pool in ("threads", "processes")]
    for worker in workers:
        cluster.wait_ready(worker)
    producers: list[subprocess.Popen[bytes]] = [
        cluster.start_script(
            PRODUCER,
            str(index),
            str(PER_PRODUCER),
            str(PRODUCE_SECONDS),
            str(cluster.root / f"producer-{index}.ids"),
            log=f"producer-{index}.log",
            env={"STEM_REL_RECORD_QUEUED": "1"},
        )
        for index in range(PRODUCERS)
    ]
    for index, proc in enumerate(producers):
        try:
            code = proc.wait(timeout=PRODUCE_SECONDS + 30)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"producer {index} did not finish: {cluster.log_of(f'producer-{index}.log')}"
            )
        assert code == 0, (
            f"producer {index} exited {code}: {cluster.log_of(f'producer-{index}.log')[-3000:]}"
        )
    produced_lists = [
        (cluster.root / f"producer-{index}.ids").read_text().split() for index in range(PRODUCERS)
    ]
    produced = [task_id for ids in produced_lists for task_id in ids]
    assert [len(ids) for ids in produced_lists] == [PER_PRODUCER] * PRODUCERS

    def drained() -> bool:
        return cluster.remaining() == 0 and len(cluster.executions()) >= len(set(produced))

    try:
        wait_for(drained, timeout=30, interval=0.1)
    except pytest.fail.Exception:
        dumps = "\n".join(f"== {w.name}\n{w.dump_threads()}" for w in workers)
        pytest.fail(
            f"{cluster.remaining()} jobs left and {len(cluster.executions())} of "
            f"{len(produced)} executed 30 s after the producers finished\n{dumps}"
        )
    for worker in workers:
        worker.proc.send_signal(signal.SIGTERM)
    codes = {worker.name: wait_exit(worker) for worker in workers}
    elapsed = time.monotonic() - started
    print(f"{len(produced)} jobs through {len(workers)} workers in {elapsed:.1f}s")

    # No lock error, no traceback, no warning or error record reached any output.
    bad = {name: forbidden_lines(text) for name, text in cluster.all_logs().items()}
    bad = {name: lines[:5] for name, lines in bad.items() if lines}
    assert not bad, f"lock errors or tracebacks in the output: {bad}"
    complaints = {
        worker.name: [
            r.get("message")
            for r in worker.records()
            if r.get("level") != "info" and r.get("message") != "received SIGTERM: warm shutdown"
        ][:5]
        for worker in workers
    }
    complaints = {name: found for name, found in complaints.items() if found}
    assert not complaints, f"the workers logged warnings or errors: {complaints}"
    assert codes == {worker.name: 0 for worker in workers}, codes

    # Each produced job ran exactly once; nothing else ran.
    runs = cluster.executions()
    counts = Counter({task_id: len(markers) for task_id, markers in runs.items()})
    assert len(set(produced)) == len(produced), "a producer got the same id twice"
    missing = set(produced) - set(runs)
    unknown = set(runs) - set(produced)
    twice = {task_id: runs[task_id] for task_id, n in counts.items() if n > 1}
    assert not missing, f"{len(missing)} of {len(produced)} jobs never ran: {sorted(missing)[:10]}"
    assert not unknown, f"runs of ids nobody produced: {sorted(unknown)[:10]}"
    assert not twice, f"{len(twice)} jobs ran more than once: {summary(twice)}"

    # Every status succeeded with its own result; the broker is empty; files intact.
    statuses = {task_id: cluster.backend.get(task_id) for task_id in produced}
    wrong = {
        task_id: (status.state.value, status.payload) if status else None
        for task_id, status in statuses.items()
        if status is None
        or status.state is not TaskState.SUCCEEDED
        or not isinstance(status.payload, dict)
        or status.payload.get("run") != runs[task_id][0]
    }
    assert not wrong, f"{len(wrong)} of {len(produced)} statuses are wrong: {summary(wrong)}"
    left = (cluster.remaining(), cluster.job_rows(), cluster.dead_letters())
    assert left == (0, 0, []), f"left in the broker (remaining, rows, dead letters): {left}"
    cluster.close_engines()
    cluster.wait_groups_gone()
    integrity = cluster.integrity()
    assert integrity == {"broker.sqlite": ["ok"], "backend.sqlite": ["ok"]}, integrity
