"""Crash tests (issue 9, item 1): real ``stem-worker`` processes, thread and process
pools, stopped at random points while they run a queue of short jobs.

Stops: SIGKILL; SIGTERM (warm: running tasks finish, unfinished leases are released);
a double SIGINT (warm, then hard); SIGSTOP of the worker's whole process group held
past the visibility timeout while another worker re-leases and finishes its jobs, then
SIGCONT (the stale worker's acks and results must be refused). Workers are restarted
until the queue is empty. Then: every job succeeded and ran at least once; a job ran
more than once only as often as stops of the workers that ran it allow; each stored
result is the one of a run recorded in the execution log, by the worker that acked;
no lease or job row is left; both files pass ``PRAGMA integrity_check``.

The random plan is reproducible: the seed is printed and ``STEM_REL_SEED`` sets it.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from stem_sqlite import TaskState
from tests.conftest import wait_for
from tests.reliability.conftest import (
    Cluster,
    WorkerProcess,
    summary,
    wait_exit,
    wait_worker,
)

CONCURRENCY = 2
MULTIPLIER = 2  # --prefetch-multiplier: a job may wait in the worker, its lease renewed
PREFETCH = CONCURRENCY * MULTIPLIER  # deliveries a worker may hold at once
VISIBILITY = 1.0
FIRST_JOBS = 200
TOP_UP = 60  # published whenever fewer than LOW jobs are left while the stops go on
LOW = 40
MAX_JOBS = 3000  # a bound on the top-ups, should a worker stall
ROUNDS = 4  # stops of each kind per test
#: Stops that may make another worker run a job again (a warm SIGTERM may not).
DISRUPTIVE = ("kill", "int2", "stop")
pytestmark = pytest.mark.timeout(150)

#: What a stale worker logs when the broker or the backend refuses one of its writes.
REFUSALS = ("lost its lease", "stale receipt", "taken over", "lease lost")


@dataclass
class Stop:
    kind: str
    worker: str
    held: set[str] = field(default_factory=set)
    note: str = ""


@dataclass
class Run:
    """The state of one kill test, for the checks and the failure messages."""

    cluster: Cluster
    pool: str
    rng: random.Random
    ids: list[str] = field(default_factory=list)
    live: list[WorkerProcess] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    #: task id -> status stored by the rescuing run while the stale worker was stopped
    rescued: dict[str, Any] = field(default_factory=dict)

    def keep_busy(self) -> None:
        """Publish more jobs when the queue runs low, so that every stop finds work."""
        if self.cluster.remaining() < LOW and len(self.ids) < MAX_JOBS:
            self.ids += self.cluster.publish(len(self.ids), TOP_UP)

    def busy(self, worker: WorkerProcess) -> set[str]:
        """The jobs ``worker`` holds now (topping the queue up first)."""
        self.keep_busy()
        return self.cluster.held_by(worker.name)

    def diagnostics(self) -> str:
        return f"pool={self.pool} jobs={len(self.ids)} stops=" + "; ".join(
            f"{s.kind}:{s.worker} held={len(s.held)} {s.note}" for s in self.stops
        )


def test_kill_thread_pool(make_cluster: Any) -> None:
    run_kill_test(make_cluster(VISIBILITY), "threads")


def test_kill_process_pool(make_cluster: Any) -> None:
    run_kill_test(make_cluster(VISIBILITY), "processes")


def run_kill_test(cluster: Cluster, pool: str) -> None:
    seed = int(os.environ.get("STEM_REL_SEED", random.randrange(1 << 30)))
    print(f"kill test ({pool}): seed {seed}")
    rng = random.Random(seed)
    run = Run(cluster, pool, rng)
    run.ids = cluster.publish(0, FIRST_JOBS)
    plan = [*DISRUPTIVE, "term"] * ROUNDS
    rng.shuffle(plan)
    started = time.monotonic()
    for kind in plan:
        if not run.live:
            run.live.append(start(cluster, pool))
        victim = rng.choice(run.live)
        wait_worker(
            victim,
            lambda v=victim: run.busy(v),
            timeout=20,
            interval=0.005,
            what=lambda v=victim: f"worker {v.name} took no job; {run.diagnostics()}",
        )
        time.sleep(rng.uniform(0, 0.3))  # a random kill point (tasks last 0-30 ms)
        {"kill": kill, "term": term, "int2": double_sigint, "stop": pause}[kind](run, victim)
    print(f"stops done in {time.monotonic() - started:.1f}s: {run.diagnostics()}")

    # Restart until the queue is empty, then stop every worker warmly.
    while len(run.live) < 2:
        run.live.append(start(cluster, pool))
    try:
        wait_for(lambda: cluster.remaining() == 0, timeout=60, interval=0.05)
    except pytest.fail.Exception:
        dumps = "\n".join(f"== {w.name}\n{w.dump_threads()}" for w in run.live)
        pytest.fail(
            f"the queue never emptied ({cluster.remaining()} left); {run.diagnostics()}\n{dumps}"
        )
    for worker in run.live:
        worker.proc.send_signal(signal.SIGTERM)
    for worker in run.live:
        code = wait_exit(worker)
        assert code == 0, f"{worker.name} exited {code} after SIGTERM: {worker.log()[-3000:]}"
    run.live.clear()
    print(f"drained after {time.monotonic() - started:.1f}s")
    check(run)


def start(cluster: Cluster, pool: str) -> WorkerProcess:
    worker = cluster.start_worker(
        pool, concurrency=CONCURRENCY, extra=("--prefetch-multiplier", str(MULTIPLIER))
    )
    cluster.wait_ready(worker)
    return worker


# -- the stops ----------


def kill(run: Run, victim: WorkerProcess) -> None:
    """SIGKILL the worker (its pool processes, orphaned, end on their own)."""
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait(timeout=10)
    run.live.remove(victim)
    run.stops.append(Stop("kill", victim.name, run.cluster.held_by(victim.name)))


def term(run: Run, victim: WorkerProcess) -> None:
    """SIGTERM: a warm shutdown; running tasks finish, no lease is left behind."""
    victim.proc.send_signal(signal.SIGTERM)
    code = wait_exit(victim, after=" of SIGTERM (a warm shutdown)")
    run.live.remove(victim)
    left = run.cluster.held_by(victim.name)
    run.stops.append(Stop("term", victim.name, left))
    assert code == 0, f"{victim.name} exited {code} after SIGTERM: {victim.log()[-3000:]}"
    assert not left, (
        f"a warm shutdown of {victim.name} left {len(left)} leases held (not released): "
        f"{sorted(left)}; {victim.log()[-3000:]}"
    )


def double_sigint(run: Run, victim: WorkerProcess) -> None:
    """SIGINT (warm), then as soon as it is handled a second SIGINT (hard)."""
    held = run.cluster.held_by(victim.name)
    victim.proc.send_signal(signal.SIGINT)
    wait_worker(
        victim,
        lambda: "received SIGINT: warm shutdown" in victim.log() or not victim.alive(),
        timeout=10,
        interval=0.001,
        what=f"{victim.name} did not report the first SIGINT",
    )
    time.sleep(run.rng.choice([0.0, run.rng.uniform(0, 0.02)]))  # a random point of the stop
    if victim.alive():
        victim.proc.send_signal(signal.SIGINT)
    code = wait_exit(victim, after=" of a second SIGINT (a hard shutdown)")
    run.live.remove(victim)
    hard = "received SIGINT: hard shutdown" in victim.log()
    left = run.cluster.held_by(victim.name)
    run.stops.append(
        Stop("int2", victim.name, held, f"hard={hard} exit={code} leases-left={len(left)}")
    )
    assert code == 0, f"{victim.name} exited {code} after a double SIGINT: {victim.log()[-3000:]}"
    assert not left, (
        f"the shutdown of {victim.name} by two SIGINTs left {len(left)} leases held: "
        f"{sorted(left)}; {victim.log()[-3000:]}"
    )


def pause(run: Run, victim: WorkerProcess) -> None:
    """SIGSTOP the worker's process group while it holds jobs (and no write lock), let
    another worker re-lease and finish those jobs, then SIGCONT: the stale worker's
    writes must be refused and the rescuing run's results must stay."""
    cluster = run.cluster
    held: set[str] = set()
    tries = []
    for _ in range(50):
        run.keep_busy()
        victim.signal_group(signal.SIGSTOP)
        wait_for(lambda: stopped(victim.pid), timeout=5, interval=0.001)
        held = cluster.held_by(victim.name)
        locked = [
            path.name
            for path in (cluster.broker_path, cluster.backend_path)
            if cluster.write_locked(path)
        ]
        if held and not locked:
            break
        tries.append((len(held), locked))
        # Stopped between jobs or inside a write transaction (which would block
        # every other writer until SIGCONT): let it go on a little and try again.
        victim.signal_group(signal.SIGCONT)
        time.sleep(run.rng.uniform(0.002, 0.02))
    else:
        pytest.fail(
            f"could not stop {victim.name} while it held a job and no write lock; tries "
            f"(held, locked): {tries[:10]}; {run.diagnostics()}\n{victim.dump_threads()}"
        )
    stop = Stop("stop", victim.name, held)
    run.stops.append(stop)
    rescuer = start(cluster, run.pool)
    run.live.append(rescuer)
    wait_worker(
        rescuer,
        lambda: not (held & cluster.job_ids()),
        timeout=30,
        interval=0.02,
        what=(
            f"jobs {sorted(held)} held by the stopped {victim.name} were not all finished by "
            f"{rescuer.name} after the {VISIBILITY:g}s visibility timeout"
        ),
    )
    for task_id in held:
        status = cluster.backend.get(task_id)
        assert status is not None and status.state is TaskState.SUCCEEDED, (
            f"job {task_id} left the broker while {victim.name} was stopped, but its status "
            f"is {status}"
        )
        assert status.meta.get("worker") != victim.name, (task_id, status)
        run.rescued[task_id] = status
    victim.signal_group(signal.SIGCONT)
    # Every job the stale worker held must meet a refusal once it resumes.
    wait_worker(
        victim,
        lambda: not unrefused(victim, held),
        timeout=15,
        what=f"{victim.name} resumed and logged no refused write for some of {sorted(held)}",
    )
    stop.note = f"rescued by {rescuer.name}"
    # Alone again, the resumed worker must get back to holding a full prefetch: losing
    # leases while paused must not cost it any of its slots.
    term(run, rescuer)
    most = [0]

    def full() -> bool:
        most[0] = max(most[0], len(run.busy(victim)))
        return most[0] >= PREFETCH

    wait_worker(
        victim,
        full,
        timeout=8,
        interval=0.002,
        what=lambda: (
            f"{victim.name}, resumed after losing the leases of {sorted(held)}, held at most "
            f"{most[0]} of its {PREFETCH} prefetch slots at once while alone on the queue "
            f"({cluster.remaining()} jobs ready now): a lost lease must not cost the worker a "
            f"prefetch slot"
        ),
    )


def stopped(pid: int) -> bool:
    """Whether the process is in the stopped state (``T`` in /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except FileNotFoundError:
        return True


def unrefused(worker: WorkerProcess, ids: set[str]) -> set[str]:
    """The ids among ``ids`` for which ``worker`` has logged no refused write."""
    refused = {
        task_id
        for record in worker.records()
        for task_id in ids
        if task_id in str(record.get("message", ""))
        and any(word in str(record.get("message", "")) for word in REFUSALS)
    }
    return ids - refused


# -- the checks ----------


def check(run: Run) -> None:
    cluster = run.cluster
    ids = run.ids
    runs = cluster.executions()
    statuses = {task_id: cluster.backend.get(task_id) for task_id in ids}
    remaining = cluster.remaining()
    inflight = cluster.broker.inflight_count("rel")
    rows = cluster.job_rows()
    dead = cluster.dead_letters()
    cluster.close_engines()
    cluster.wait_groups_gone()
    integrity = cluster.integrity()
    diag = run.diagnostics()

    # Every job completed: executed at least once, and stored as succeeded.
    never = [task_id for task_id in ids if task_id not in runs]
    assert not never, f"{len(never)} jobs never ran: {never[:10]}; {diag}"
    unknown = set(runs) - set(ids)
    assert not unknown, f"the log holds runs of unknown ids: {sorted(unknown)[:10]}"
    not_done = {
        task_id: (s.state.value if s else None)
        for task_id, s in statuses.items()
        if s is None or s.state is not TaskState.SUCCEEDED
    }
    assert not not_done, (
        f"{len(not_done)} of {len(ids)} jobs are not succeeded: {summary(not_done)}; "
        f"dead letters: {dead[:5]}; {diag}"
    )

    # Duplicates only where a stop of a worker that ran the job allows them.
    stops_of = Counter(s.worker for s in run.stops if s.kind in DISRUPTIVE)
    too_many = {}
    for task_id in ids:
        markers = runs[task_id]
        workers = {marker.split("/")[0] for marker in markers}
        allowed = 1 + sum(stops_of[w] for w in workers)
        if len(markers) > allowed:
            too_many[task_id] = f"{len(markers)} runs > {allowed} allowed: {markers}"
    assert not too_many, f"jobs ran too often: {summary(too_many)}; {diag}"
    duplicates = sum(len(runs[task_id]) - 1 for task_id in ids)
    disruptive = sum(stops_of.values())
    bound = disruptive * CONCURRENCY * PREFETCH
    print(f"{len(ids)} jobs, {duplicates} duplicate runs, {disruptive} disruptive stops")
    assert duplicates <= bound, (
        f"{duplicates} duplicate runs > {disruptive} stops x {CONCURRENCY} x {PREFETCH}; {diag}"
    )

    # Each stored result is that of a logged run, by the worker that acked the job.
    acked_by: dict[str, list[str]] = {}
    for worker in cluster.workers:
        for task_id in worker.acked():
            acked_by.setdefault(task_id, []).append(worker.name)
    wrong = {}
    for task_id, status in statuses.items():
        assert status is not None
        payload = status.payload if isinstance(status.payload, dict) else {}
        marker = payload.get("run")
        writer = str(marker).split("/")[0]
        ackers = acked_by.get(task_id, [])
        if payload.get("id") != task_id or marker not in runs[task_id]:
            wrong[task_id] = f"payload {status.payload} is not a logged run {runs[task_id]}"
        elif status.meta.get("worker") != writer:
            wrong[task_id] = f"meta worker {status.meta.get('worker')} != run by {writer}"
        elif len(ackers) > 1:
            wrong[task_id] = f"acked by several workers: {ackers}"
        elif task_id in run.rescued and run.rescued[task_id].payload != status.payload:
            wrong[task_id] = (
                f"the stale worker overwrote the result {run.rescued[task_id].payload} of the "
                f"run that acked with {status.payload} (runs {runs[task_id]})"
            )
        elif ackers and ackers[0] != writer:
            wrong[task_id] = (
                f"{ackers[0]} acked the job but the stored result is that of the run {marker} "
                f"(runs {runs[task_id]}): a stale run overwrote the newer run's result"
            )
    assert not wrong, f"{len(wrong)} stored results are wrong: {summary(wrong)}; {diag}"

    # No lease, no job, no dead letter left; both files intact.
    assert (remaining, inflight, rows) == (0, 0, 0), (
        f"left in the broker: remaining={remaining} inflight={inflight} rows={rows}"
    )
    assert not dead, f"dead letters: {dead[:5]}"
    assert integrity == {"broker.sqlite": ["ok"], "backend.sqlite": ["ok"]}, integrity
    kinds = Counter(s.kind for s in run.stops)
    assert all(kinds[kind] >= ROUNDS for kind in ("kill", "term", "int2", "stop")), kinds
