"""The app: a registry of tasks and the producer that enqueues them."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, overload

from .contracts import Broker, ResultBackend
from .errors import ConfigurationError, DatabaseBusy, InvalidArgument, TaskNotRegistered
from .model import Envelope, TaskState
from .options import NO_OPTIONS, EnqueueOptions, RetryPolicy
from .paths import DatabasePaths, resolve_paths
from .producer import build_envelope
from .result import AsyncResult
from .retry import retry_delay
from .signature import Signature
from .timeutil import SYSTEM_CLOCK, Clock, Duration, optional_seconds

log = logging.getLogger("stem_sqlite.app")

POOLS = ("threads", "processes")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*$")


def parse_rate_limit(spec: str | None) -> tuple[float, float] | None:
    """``"30/m"`` -> (30 tokens, 60 seconds); None for no limit. Bad text is refused."""
    if spec is None:
        return None
    match = _RATE.match(spec) if isinstance(spec, str) else None
    if not match or float(match.group(1)) <= 0:
        raise InvalidArgument(f"rate_limit must look like '10/s', '30/m' or '100/h', got {spec!r}")
    return float(match.group(1)), {"s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]


class Task:
    """A registered task: callable as the plain function, and enqueued with
    :meth:`delay`, :meth:`apply_async` or a :meth:`signature`."""

    def __init__(
        self,
        app: Stem,
        fn: Callable[..., Any],
        *,
        name: str,
        queue: str = "default",
        max_retries: int = 0,
        retry_policy: RetryPolicy | None = None,
        priority: int = 0,
        time_limit: Duration | None = None,
        soft_time_limit: Duration | None = None,
        ignore_result: bool = False,
        rate_limit: str | None = None,
        visibility_timeout: Duration | None = None,
        bind: bool = False,
        pool: str | None = None,
    ) -> None:
        if pool is not None and pool not in POOLS:
            raise InvalidArgument(f"pool must be 'threads' or 'processes', got {pool!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidArgument(f"max_retries must be 0 or more, got {max_retries!r}")
        if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
            raise InvalidArgument(f"retry_policy must be a RetryPolicy, got {retry_policy!r}")
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.max_retries = max_retries
        self.retry_policy = retry_policy
        self.priority = priority
        self.time_limit = optional_seconds(time_limit, name="time_limit")
        self.soft_time_limit = optional_seconds(soft_time_limit, name="soft_time_limit")
        self.ignore_result = ignore_result
        self.rate_limit = rate_limit
        self.rate = parse_rate_limit(rate_limit)
        self.visibility_timeout = optional_seconds(visibility_timeout, name="visibility_timeout")
        self.bind = bind
        self.pool = pool
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", __name__)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Enqueue a call with these arguments and the task's default options."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue a call with options (countdown, eta, expires, priority, task_id, queue,
        time limits, ignore_result, max_retries, retry_policy, link, link_error, headers,
        meta, and Celery's informational options). Returns its :class:`AsyncResult`."""
        return self.app.enqueue(self.name, args, kwargs, options=NO_OPTIONS.merged(**options))

    def signature(
        self, *args: Any, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A storable description of a call, for links and the canvas."""
        return Signature(self.name, args, kwargs or {}, options, self.app)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """Celery's shorthand: a signature with these positional and keyword arguments."""
        return Signature(self.name, args, kwargs, {}, self.app)

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``InvalidArgument`` when the call would not match the function's signature."""
        try:
            params = inspect.signature(self.fn)
        except (TypeError, ValueError):
            return
        bound_args = (None, *args) if self.bind else args
        try:
            params.bind(*bound_args, **kwargs)
        except TypeError as exc:
            raise InvalidArgument(f"{self.name}{params}: {exc}") from None


class Stem:
    """The app: a task registry plus a producer bound to a broker (and optionally a
    result backend).

    ``Stem(broker=..., backend=...)`` uses the engines given; ``Stem()`` resolves the
    file paths from the environment (or from :meth:`configure`) when the broker or
    backend is first used, so a task module never needs to know where files are.
    A producer that was given a backend records ``queued`` at enqueue; one without a
    backend writes nothing to it (keep producers off the backend file).
    """

    def __init__(
        self,
        broker: Broker | None = None,
        backend: ResultBackend | None = None,
        *,
        name: str = "stem",
        namespace: str = "stem",
        clock: Clock | None = None,
        record_queued: bool | None = None,
        env: Mapping[str, str] | None = None,
        default_base: str = "stem",
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.clock = clock or SYSTEM_CLOCK
        self.tasks: dict[str, Task] = {}
        self._broker = broker
        self._backend = backend
        self._owns_broker = False
        self._owns_backend = False
        self._record_queued = backend is not None if record_queued is None else record_queued
        self._env = env
        self._default_base = default_base
        self._paths: DatabasePaths | None = None
        self._engine_options: dict[str, dict[str, Any]] = {"broker": {}, "backend": {}}
        from .builtins import register_builtins

        register_builtins(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> Stem:
        """An app whose broker and backend paths come from the environment (api §8),
        resolved now and opened on first use."""
        app = cls(env=env, **kwargs)
        app.configure()
        return app

    # -- engines ----------

    def configure(
        self,
        *,
        broker_path: str | os.PathLike[str] | None = None,
        backend_path: str | os.PathLike[str] | None = None,
        broker_options: dict[str, Any] | None = None,
        backend_options: dict[str, Any] | None = None,
    ) -> DatabasePaths:
        """Bind file paths (flags beat the environment) and engine options before the
        broker or backend is opened. The command-line tools call this on the app they load."""
        if self._owns_broker or self._owns_backend:
            raise ConfigurationError("configure() must be called before the app opens its files")
        self._paths = resolve_paths(
            self._env, broker=broker_path, backend=backend_path, default_base=self._default_base
        )
        self._engine_options["broker"].update(broker_options or {})
        self._engine_options["backend"].update(backend_options or {})
        return self._paths

    @property
    def is_configured(self) -> bool:
        """Whether file paths were bound (by :meth:`configure` or ``from_env``)."""
        return self._paths is not None

    @property
    def paths(self) -> DatabasePaths:
        if self._paths is None:
            self.configure()
        assert self._paths is not None
        return self._paths

    @property
    def broker(self) -> Broker:
        """The broker, opened on first access when the app was created without one."""
        if self._broker is None:
            from .sqlite import SqliteBroker

            options = {"namespace": self.namespace, **self._engine_options["broker"]}
            self._broker = SqliteBroker.open(self.paths.broker, **options)
            self._owns_broker = True
        return self._broker

    @property
    def backend(self) -> ResultBackend:
        """The result backend, opened on first access when the app was created without one."""
        if self._backend is None:
            from .sqlite import SqliteResultBackend

            options = {"namespace": self.namespace, **self._engine_options["backend"]}
            self._backend = SqliteResultBackend.open(self.paths.backend, **options)
            self._owns_backend = True
        return self._backend

    @property
    def has_backend(self) -> bool:
        return self._backend is not None

    def close(self) -> None:
        """Close the broker and backend this app opened itself (not ones it was given)."""
        if self._owns_broker and self._broker is not None:
            self._broker.close()
            self._broker, self._owns_broker = None, False
        if self._owns_backend and self._backend is not None:
            self._backend.close()
            self._backend, self._owns_backend = None, False

    def __enter__(self) -> Stem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registry ----------

    @overload
    def task(self, fn: Callable[..., Any], /) -> Task: ...

    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., ...)``."""

        def register(func: Callable[..., Any]) -> Task:
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            if task_name in self.tasks and self.tasks[task_name].fn is not func:
                existing = self.tasks[task_name].fn
                if getattr(existing, "__qualname__", None) != func.__qualname__:
                    raise ConfigurationError(f"a different task is already named {task_name!r}")
            task = Task(self, func, name=task_name, **options)
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def get_task(self, name: str) -> Task:
        """The registered task ``name``; ``TaskNotRegistered`` with near matches otherwise."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument(f"a task name must be a non-empty string, got {name!r}")
        task = self.tasks.get(name)
        if task is None:
            close = difflib.get_close_matches(name, list(self.tasks), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TaskNotRegistered(f"no task named {name!r} is registered{hint}")
        return task

    # -- producing ----------

    def enqueue(
        self,
        name: str,
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
        options: EnqueueOptions | None = None,
        *,
        strict: bool = True,
        parent: Envelope | None = None,
    ) -> AsyncResult:
        """Enqueue task ``name``. Unless ``strict=False``, the name must be registered
        (``TaskNotRegistered`` otherwise). Nothing is written when an input is refused."""
        task = self.get_task(name) if strict else self.tasks.get(name)
        envelope = build_envelope(
            name,
            args,
            kwargs,
            options or NO_OPTIONS,
            task_defaults=task,
            parent=parent,
            clock=self.clock,
        )
        self.publish(envelope, options or NO_OPTIONS)
        return AsyncResult(envelope.id, self)

    def publish(self, envelope: Envelope, options: EnqueueOptions | None = None) -> None:
        """Publish a ready-made envelope (with publish retries when ``options.retry``),
        then record ``queued`` when this producer keeps statuses."""
        options = options or NO_OPTIONS
        attempts = 1
        policy = options.retry_policy_publish
        if options.retry:
            attempts += policy.max_retries if policy and policy.max_retries is not None else 3
        for attempt in range(attempts):
            try:
                self.broker.publish(envelope)
                break
            except DatabaseBusy:
                if attempt == attempts - 1:
                    raise
                delay = retry_delay(attempt, policy) if policy else 0.1 * (attempt + 1)
                log.warning("publish of %s failed (database busy); retrying", envelope.id)
                time.sleep(delay)
        if self._record_queued:
            self.backend.set(
                envelope.id,
                TaskState.QUEUED,
                meta={**envelope.meta, "queue": envelope.queue, "maxRetries": envelope.max_retries},
            )
