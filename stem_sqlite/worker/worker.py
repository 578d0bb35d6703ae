"""The Worker: consumes queues, runs tasks in threads or processes, keeps leases alive."""

from __future__ import annotations

import logging
import os
import queue as queue_module
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from ..app import Stem
from ..errors import InvalidArgument
from ..model import Delivery, Envelope, TaskState, clean_queue_name
from ..retry import RandomSource
from ..timeutil import utcnow
from .batch import SettleBatch
from .execution import Execution
from .heartbeat import Heartbeats
from .leases import HeldLease, lease_epoch
from .loops import _STOP, WorkLoops
from .pipeline import Pipeline
from .processes import ProcessPool, importable
from .ratelimit import RateLimiter
from .scheduler import Scheduler

log = logging.getLogger("stem_sqlite.worker")

SHUTDOWN_MODES = ("warm", "soft", "hard")


class Worker(WorkLoops, Heartbeats):
    """Runs the app's tasks from one or more queues.

    Never more than ``concurrency`` tasks run at once, and never more than
    ``concurrency * prefetch_multiplier`` deliveries are held. A task's status is
    stored while its lease holds, then the job is acked; leases are renewed every
    third of their length by their full length.
    """

    def __init__(
        self,
        app: Stem,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        pool: str = "threads",
        prefetch_multiplier: int = 1,
        name: str | None = None,
        shutdown_timeout: float = 30,
        heartbeat_interval: float = 10,
        max_deliveries: int = 5,
        rng: RandomSource | None = None,
    ) -> None:
        names = list(queues) if queues else ["default"]
        self.queues = list(dict.fromkeys(clean_queue_name(q) for q in names))
        self.concurrency = concurrency if concurrency is not None else (os.cpu_count() or 1)
        if (
            isinstance(self.concurrency, bool)
            or not isinstance(self.concurrency, int)
            or self.concurrency < 1
        ):
            raise InvalidArgument(f"concurrency must be 1 or more, got {concurrency!r}")
        if pool not in ("threads", "processes"):
            raise InvalidArgument(f"pool must be 'threads' or 'processes', got {pool!r}")
        if not isinstance(prefetch_multiplier, int) or prefetch_multiplier < 1:
            raise InvalidArgument(
                f"prefetch_multiplier must be 1 or more, got {prefetch_multiplier!r}"
            )
        self.app = app
        self.pool = pool
        self.prefetch = self.concurrency * prefetch_multiplier
        self.name = name or f"stem-worker-{socket.gethostname()}-{os.getpid()}"
        self.shutdown_timeout = float(shutdown_timeout)
        self.heartbeat_interval = float(heartbeat_interval)
        self.max_deliveries = max_deliveries
        self.rng: RandomSource = rng or random.Random()
        self.rate_limiter = RateLimiter()
        self.process_pool = ProcessPool(self.concurrency)
        self.scheduler: Scheduler | None = None  # type: ignore[assignment]
        self._pipeline = Pipeline(self)
        self.batch = SettleBatch(self)
        self._work: queue_module.Queue[Any] = queue_module.Queue()
        self._active: set[Execution] = set()
        self._active_lock = threading.Lock()
        self._consumers: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._signals: list[int] = []  # appended by the signal handler, read by run()
        self._stopping = threading.Event()
        self._settled = threading.Event()
        self._stopped = threading.Event()
        self._shutdown_requested = threading.Event()
        self._mode = -1
        self._started = False
        self._blocking = False
        self._finishing = threading.Lock()
        self._last_lease: HeldLease | None = None
        self.counts = {"succeeded": 0, "failed": 0, "retried": 0, "received": 0}

    # -- start ----------

    def start(self) -> None:
        """Open the engines and start consuming in background threads."""
        if self._started:
            return
        self._started = True
        broker = self.app.broker
        backend = self.app.backend
        self.scheduler = Scheduler()
        self.batch.start()
        self._warn_about_limits()
        for queue in self.queues:
            consumer = broker.consume(queue, prefetch=self.prefetch, consumer_name=self.name)
            self._consumers.append(consumer)
        if len(self._consumers) == 1 and hasattr(self._consumers[0], "ack_and_refill"):
            self.batch.refill = self._consumers[0]
        if len(self._consumers) == 1 and self.prefetch == self.concurrency:
            # Executors claim their jobs themselves: no hand-off between threads. A
            # claim takes a job for every free slot; with as many slots as executors, a
            # job it leaves in the consumer's buffer is taken at once by an idle one.
            for index in range(self.concurrency):
                self._spawn(f"stem-exec-{index}", self._claim_and_execute, self._consumers[0])
        else:
            if len(self._consumers) == 1:
                self._spawn(f"stem-fetch[{self.queues[0]}]", self._fetch, self._consumers[0])
            else:
                self._spawn("stem-fetch", self._fetch_many)
            for index in range(self.concurrency):
                self._spawn(f"stem-exec-{index}", self._execute)
        if self._uses_processes():
            self.process_pool.warm_up()
        self._beat(backend)
        self.scheduler.every(self.heartbeat_interval, lambda: self._beat(backend))

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _uses_processes(self) -> bool:
        return (
            any(
                (task.pool or self.pool) == "processes" and not task.name.startswith("stem.")
                for task in self.app.tasks.values()
            )
            or self.pool == "processes"
        )

    def _warn_about_limits(self) -> None:
        for task in self.app.tasks.values():
            in_threads = (task.pool or self.pool) == "threads"
            if in_threads and task.time_limit is not None:
                log.warning(
                    "task %s has a hard time_limit of %gs but runs in the thread pool: a "
                    "thread cannot be killed, so the limit only interrupts Python code "
                    "between instructions; use pool='processes' to enforce it",
                    task.name,
                    task.time_limit,
                )
            if (task.pool or self.pool) == "processes" and not importable(task.fn):
                log.error(
                    "task %s cannot run in the process pool: %s is not a module-level "
                    "function that a pool process can import",
                    task.name,
                    task.fn,
                )

    # -- what the pipeline asks of the worker ----------

    def track(self, execution: Execution) -> None:
        with self._active_lock:
            self._active.add(execution)

    def untrack(self, execution: Execution) -> None:
        with self._active_lock:
            self._active.discard(execution)

    def defer(self, delivery: Delivery, wait: float) -> None:
        """Put a rate-limited job back, same attempt, ``wait`` seconds from now."""
        envelope = delivery.envelope
        later = envelope.with_changes(not_before=utcnow(self.app.clock) + timedelta(seconds=wait))
        self.app.backend.set(
            envelope.id,
            TaskState.RETRIED,
            attempt=envelope.attempt,
            meta={
                **envelope.meta,
                "queue": envelope.queue,
                "rateLimited": True,
                "retryAfterMs": round(wait * 1000),
            },
            owner=delivery.receipt,
            take_over=True,
            epoch=lease_epoch(delivery),
        )
        self.app.broker.reschedule(delivery, later)
        self.log_event("deferred", envelope, note=f"rate limit, {wait:.3g}s")

    def log_event(
        self,
        event: str,
        envelope: Envelope,
        *,
        duration: float | None = None,
        error: Any = None,
        note: str | None = None,
    ) -> None:
        if event in self.counts:
            self.counts[event] += 1
        level = logging.WARNING if event in ("failed", "lost", "unregistered") else logging.INFO
        if not log.isEnabledFor(level):
            return
        fields = {
            "event": event,
            "task": envelope.name,
            "id": envelope.id,
            "attempt": envelope.attempt,
            "queue": envelope.queue,
        }
        text = f"{envelope.name}[{envelope.id}] {event}"
        if duration is not None:
            fields["duration"] = round(duration, 6)
            text += f" in {duration:.3f}s"
        if error is not None and event in ("failed", "retried"):
            fields["error"] = f"{error.type}: {error.message}"
            text += f": {error.type}: {error.message}"
        if note:
            fields["note"] = note
            text += f" ({note})"
        log.log(level, text, extra={"stem": fields})

    # -- running and stopping ----------

    def run(
        self,
        burst: bool = False,
        install_signal_handlers: bool = True,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Start and block until shut down. With ``burst=True``, return once the queues
        hold no ready, running or delayed job. In the main thread, the first SIGTERM or
        SIGINT starts a warm shutdown, a second one (or SIGQUIT) a hard one."""
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            self._install_signal_handlers()
        self._blocking = True
        self.start()
        if on_ready is not None:
            on_ready()  # e.g. the CLI's banner: the files are open, the first beat stored
        idle_since: float | None = None
        while not self._shutdown_requested.wait(0.05):
            self._take_signals()
            if burst:
                if self._queues_empty():
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 0.1:  # seen empty twice in a row
                        self.shutdown("warm")
                else:
                    idle_since = None
        self._finish()

    def _queues_empty(self) -> bool:
        if not self._work.empty():
            return False
        with self._active_lock:
            if self._active:
                return False
        if any(consumer.held for consumer in self._consumers):
            return False
        broker = self.app.broker
        return all(
            broker.pending_count(q) + broker.inflight_count(q) + broker.delayed_count(q) == 0
            for q in self.queues
        )

    def _install_signal_handlers(self) -> None:
        def record(signum: int, frame: Any) -> None:
            # Only note it: a handler may interrupt code that holds a lock (even inside
            # Event.set), so the shutdown itself runs from the main loop.
            self._signals.append(signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, record)

    def _take_signals(self) -> None:
        """Turn signals noted by the handler into shutdowns: the first SIGTERM/SIGINT is
        warm, any later one (or SIGQUIT) hard."""
        while self._signals:
            signum = self._signals.pop(0)
            mode = "hard" if self._mode >= 0 or signum == signal.SIGQUIT else "warm"
            log.warning("received %s: %s shutdown", signal.Signals(signum).name, mode)
            self.shutdown(mode)

    def shutdown(self, mode: str = "warm") -> None:
        """Stop taking work. ``warm``: let running tasks finish (up to shutdown_timeout);
        ``soft``: also ask them to stop (``TaskRevoked`` is raised inside them);
        ``hard``: release their jobs at once so other workers can run them."""
        if mode not in SHUTDOWN_MODES:
            raise InvalidArgument(f"shutdown mode must be one of {SHUTDOWN_MODES}, got {mode!r}")
        level = SHUTDOWN_MODES.index(mode)
        if level <= self._mode:
            return
        self._mode = level
        self._stopping.set()
        for consumer in self._consumers:
            consumer.close()
        with self._active_lock:
            active = list(self._active)
        if level >= 1:
            from ..errors import TaskRevoked

            for execution in active:
                execution.revoke_requested = True
                execution.guard.interrupt(TaskRevoked)
        if level >= 2:
            for execution in active:
                execution.abandoned = True
                execution.cancel_timers()
                execution.lease.stop()
                self._release(execution.delivery)
        self._shutdown_requested.set()
        if self._started and not self._blocking:
            self._finish()  # started with start(): nobody else will wait for the tasks

    def _finish(self) -> None:
        if not self._finishing.acquire(blocking=False):
            return
        deadline = time.monotonic() + self.shutdown_timeout
        while time.monotonic() < deadline and self._mode < 2:
            self._take_signals()
            with self._active_lock:
                if not self._active:
                    break
            time.sleep(0.02)
        with self._active_lock:
            still_running = bool(self._active)
        if still_running and self._mode < 2:
            log.warning("shutdown timeout passed with tasks running; releasing their jobs")
            self.shutdown("hard")
        for _ in range(self.concurrency):
            self._work.put(_STOP)
        # Deliveries received but never started go straight back to the queue.
        for thread in self._threads:
            until = time.monotonic() + self.shutdown_timeout
            while thread.is_alive() and self._mode < 2 and time.monotonic() < until:
                self._take_signals()
                thread.join(timeout=0.05)
        while True:
            try:
                item = self._work.get_nowait()
            except queue_module.Empty:
                break
            if item is not _STOP:
                item[1].stop()
                self._release(item[0])
        self.batch.close()
        self.process_pool.close()
        if self.scheduler is not None:
            self.scheduler.stop()
        self._stopped.set()
        self._beat(self.app.backend)  # the last word: this worker is gone
        log.info(
            "worker %s stopped (%s)",
            self.name,
            ", ".join(f"{k} {v}" for k, v in self.counts.items()),
        )

    def join(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    @property
    def active_count(self) -> int:
        with self._active_lock:
            return len(self._active)


__all__ = ["Worker"]
