"""The application object: the task registry, its settings, and the client that reaches NATS.

``Celeriac`` holds the tasks registered with ``@app.task`` (and every ``@shared_task``),
its settings (``app.conf``) and a ``Client`` (one connected ``Broker`` per event loop,
and a background loop for blocking calls), so submitting works from Flask or Django
views, scripts and worker threads; async code uses the ``a``-prefixed twins on its
own loop. The last app created is the current one (``celeriac.current``).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Unpack, cast, overload

from celeriac import async_result, current, periodic, runoptions, schedules, shared
from celeriac.broker import DEFAULT_CONNECT_TIMEOUT, Broker
from celeriac.canvas import Canvas, Signature
from celeriac.client import Client
from celeriac.config import Config, check_nats_url, load_source, settings_from_object
from celeriac.exceptions import ImproperlyConfigured
from celeriac.natsauth import NatsAuth
from celeriac.planning import Plan
from celeriac.protocol import jetstream, names
from celeriac.protocol.periodic import PeriodicTask
from celeriac.protocol.signing import SigningKeys, as_keys, keys_from_env
from celeriac.remoteerrors import DEFAULT_EXCEPTION_MODULES
from celeriac.submitting import prepare
from celeriac.syncbridge import refuse_inside_event_loop
from celeriac.task import Task, TaskOptions, check_options, task_class

ENV_NATS_URL = "CELERIAC_NATS_URL"
ENV_DECLARE_QUEUES = "CELERIAC_DECLARE_QUEUES"
ENV_CONNECT_TIMEOUT = "CELERIAC_CONNECT_TIMEOUT"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"

log = logging.getLogger(__name__)


def declare_queues_from_env(value: str | None) -> bool:
    """``CELERIAC_DECLARE_QUEUES``: "0", "false", "no" or "off" turn declaring off."""
    if value is None or not value.strip():
        return True
    return value.strip().lower() not in {"0", "false", "no", "off"}


def connect_timeout_from(value: float | None, env: str | None) -> float:
    """The connect timeout: ``value``, else ``CELERIAC_CONNECT_TIMEOUT``, else the default.

    Raises ``ValueError`` unless it is a number of seconds above 0.
    """
    if value is None:
        if env is None or not env.strip():
            return DEFAULT_CONNECT_TIMEOUT
        try:
            seconds = float(env)
        except ValueError:
            raise ValueError(
                f"{ENV_CONNECT_TIMEOUT} must be a number of seconds, not {env!r}"
            ) from None
        where = ENV_CONNECT_TIMEOUT
    else:
        seconds, where = value, "connect_timeout"
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{where} must be a number of seconds above 0, not {seconds}")
    return seconds


def _url(nats_url: str | None, broker: str | None) -> str:
    """The NATS URL from the arguments (``broker`` is Celery's name), the environment,
    else the default."""
    if nats_url is not None and broker is not None and nats_url != broker:
        raise ImproperlyConfigured("give nats_url or broker (the same thing), not both")
    given = nats_url if nats_url is not None else broker
    if given is not None:
        return check_nats_url(given, "nats_url" if nats_url is not None else "broker")
    return os.environ.get(ENV_NATS_URL) or DEFAULT_NATS_URL


# Settings that shape the NATS connection: fixed once the app has connected.
_CONNECTION_SETTINGS = frozenset({"broker_url", "broker_connection_timeout", "result_expires"})
# The app-wide task defaults (task_max_retries, ...): registered tasks follow them.
_TASK_DEFAULTS = frozenset(runoptions.CONF_KEYS.values())
# Eager mode lives in celeriac.testing (it runs the worker runtime, a layer the SDK
# never imports), so it is reached by module name.
_EAGER_MODULE = "celeriac.testing.eager"


class Celeriac:
    """A Celeriac application: register tasks on it and submit them through it.

    Creating one makes it the current app (``set_as_current=False`` does not), which
    ``AsyncResult(id)``, ``@shared_task`` and ``celeriac.current_app`` use.
    """

    def __init__(
        self,
        name: str,
        nats_url: str | None = None,
        *,
        broker: str | None = None,
        default_queue: str = names.DEFAULT_QUEUE,
        result_ttl: float = jetstream.RESULT_TTL_SECONDS,
        declare_queues: bool | None = None,
        nats_credentials: str | None = None,
        nats_auth: NatsAuth | None = None,
        connect_timeout: float | None = None,
        signing_keys: SigningKeys | str | Iterable[tuple[str, bytes]] | None = None,
        task_cls: type[Task] | str | None = None,
        exception_modules: Iterable[str] = (),
        set_as_current: bool = True,
        backend: Any = None,
    ) -> None:
        if result_ttl < 0:
            raise ValueError(f"result_ttl must be >= 0 seconds (0 keeps results), not {result_ttl}")
        if backend is not None:
            raise ImproperlyConfigured(
                "backend: results are kept in NATS JetStream (the celeriac_results bucket); "
                "remove backend= (result_ttl / result_expires set how long they stay)"
            )
        self.name = name
        self.client = Client(
            name,
            _url(nats_url, broker),
            # As the operator mounts them into pods: CELERIAC_NATS_AUTH_DIR, _CREDS.
            auth=(nats_auth or NatsAuth.from_environment(os.environ, creds_file=nats_credentials)),
            declare_queues=(
                declare_queues_from_env(os.environ.get(ENV_DECLARE_QUEUES))
                if declare_queues is None
                else declare_queues
            ),
            result_ttl=result_ttl,
            default_queue=names.check_queue_name(default_queue),
            connect_timeout=connect_timeout_from(
                connect_timeout, os.environ.get(ENV_CONNECT_TIMEOUT)
            ),
            # CELERIAC_SIGNING_KEYS or _FILE, as the operator mounts them into worker pods.
            signing_keys=(
                keys_from_env(os.environ)
                if signing_keys is None
                else as_keys(signing_keys, "signing_keys")
            ),
        )
        # Replaced, never changed in place, under _registering: a reader (the worker
        # iterating app.tasks) holds a dict no registration mutates.
        self._tasks: dict[str, Task] = {}
        # How many @shared_task definitions were handled here (see celeriac.shared),
        # and why those that could not be registered failed, by task name.
        self._shared_seen = 0
        self._shared_failures: dict[str, Exception] = {}
        self._registering = threading.RLock()
        # Tasks registered without queue=: they follow task_default_queue changes.
        self._default_queue_tasks: set[str] = set()
        self._task_cls: type[Task] = Task if task_cls is None else task_class(task_cls, "task_cls")
        # Periodic tasks by schedule name; ``sync_schedules`` publishes them.
        self.periodic_tasks: dict[str, PeriodicTask] = {}
        self.conf = Config(
            {
                "broker_url": self.client.nats_url,
                "task_default_queue": self.client.default_queue,
                "result_expires": self.client.result_ttl,
                "broker_connection_timeout": self.client.connect_timeout,
                "result_exception_modules": exception_modules,
            },
            on_change=self._conf_changed,
        )
        self.client.exception_modules = self._exception_modules(self.conf.result_exception_modules)
        if set_as_current:
            self.set_current()

    def __repr__(self) -> str:
        return f"<Celeriac {self.name} {self.nats_url}>"

    # The client's settings, readable (and the URL settable before first use) on the app.

    @property
    def nats_url(self) -> str:
        """The NATS server URL(s) this app connects to."""
        return self.client.nats_url

    @nats_url.setter
    def nats_url(self, value: str) -> None:
        self.conf.broker_url = value

    @property
    def nats_credentials(self) -> str | None:
        """The NATS .creds file this app authenticates with, if any."""
        return self.client.auth.creds_file

    @property
    def nats_auth(self) -> NatsAuth:
        """The credentials and TLS files this app connects to NATS with."""
        return self.client.auth

    @property
    def connect_timeout(self) -> float:
        """Seconds the first connect to NATS may take before a call fails (later
        outages are waited out by reconnecting)."""
        return self.client.connect_timeout

    @property
    def signing_keys(self) -> SigningKeys | None:
        """The keys task messages are signed with (the first) and, on a worker, checked
        against (all); None: unsigned. Set it before the app is first used."""
        return self.client.signing_keys

    @signing_keys.setter
    def signing_keys(self, value: SigningKeys | None) -> None:
        self.client.signing_keys = value

    @property
    def default_queue(self) -> str:
        """The queue of tasks registered without ``queue=``."""
        return self.client.default_queue

    @property
    def result_ttl(self) -> float:
        """How long results are kept, in seconds (0: until deleted)."""
        return self.client.result_ttl

    @property
    def declare_queues(self) -> bool:
        """Whether a submit creates a queue's stream that does not exist yet."""
        return self.client.declare_queues

    # The current app and settings ---------------------------------------------------------

    def set_current(self) -> None:
        """Make this the current app (what ``AsyncResult(id)``, shared tasks and
        ``celeriac.current_app`` use)."""
        current.set_current(self)

    def set_default(self) -> None:
        """Same as ``set_current`` (one current app per process)."""
        current.set_current(self)

    def config_from_object(
        self,
        obj: Any,
        silent: bool = False,
        force: bool = False,
        namespace: str | None = None,
    ) -> None:
        """Apply the settings ``obj`` holds to ``app.conf``, at once.

        ``obj`` is a mapping, a module or object, or a string naming one to import
        (``"proj.celeriacconfig"``, ``"django.conf:settings"``). With ``namespace``
        (``"CELERIAC"``) only names starting ``CELERIAC_`` are read, the prefix
        removed and lower-cased; without it, a module's lower-case attributes.
        ``silent=True`` ignores a string that cannot be imported. An unknown or
        unsupported setting raises ``ImproperlyConfigured`` naming it, and then
        nothing is applied. ``force`` is accepted for Celery's sake: loading is
        never deferred.
        """
        where = repr(obj) if isinstance(obj, str) else type(obj).__name__
        if isinstance(obj, str):
            try:
                obj = load_source(obj)
            except ImportError:
                if silent:
                    return
                raise
        try:
            self.conf.update(settings_from_object(obj, namespace))
        except ImproperlyConfigured as exc:
            scope = f" (namespace {namespace!r})" if namespace else ""
            raise ImproperlyConfigured(f"config_from_object({where}){scope}: {exc}") from None

    def _conf_changed(self, changes: dict[str, Any]) -> None:
        """Apply checked ``app.conf`` changes to the client (``Config`` stores them)."""
        fixed = sorted(
            key for key in changes.keys() & _CONNECTION_SETTINGS if changes[key] != self.conf[key]
        )
        if fixed and self.client.connected:
            raise ImproperlyConfigured(
                f"{', '.join(fixed)} cannot change after the app has connected to NATS: set "
                "it before the first call that uses NATS, or close the app first "
                "(app.close() / await app.aclose())"
            )
        if "broker_url" in changes:
            if changes["broker_url"] is None:  # back to the environment's, or the default
                changes["broker_url"] = _url(None, None)
            self.client.nats_url = changes["broker_url"]
        if "broker_connection_timeout" in changes:
            self.client.connect_timeout = changes["broker_connection_timeout"]
        if "result_expires" in changes:
            self.client.result_ttl = changes["result_expires"]
        if "result_exception_modules" in changes:
            modules = changes["result_exception_modules"]
            self.client.exception_modules = self._exception_modules(modules)
        if "task_default_queue" in changes:
            self._retarget(changes["task_default_queue"])
        if "task_always_eager" in changes:
            _set_always_eager(self, changes["task_always_eager"])
        if changes.keys() & _TASK_DEFAULTS:
            self._follow_task_defaults({**self.conf, **changes})

    @staticmethod
    def _exception_modules(extra: Iterable[str]) -> tuple[str, ...]:
        return (
            *DEFAULT_EXCEPTION_MODULES,
            *(m for m in extra if m not in DEFAULT_EXCEPTION_MODULES),
        )

    def _follow_task_defaults(self, conf: Mapping[str, Any]) -> None:
        """Give the registered tasks the ``task_*`` defaults of ``conf`` for the options
        they did not set themselves (Django applies its settings after tasks.py may
        have been imported). Tasks still to be registered read ``app.conf`` then."""
        for task in self._tasks.values():
            task._follow_conf(conf)

    def _retarget(self, queue: str) -> None:
        """Move the tasks registered without ``queue=`` to the new default queue."""
        old = self.client.default_queue
        self.client.default_queue = queue
        with self._registering:
            for task_name in self._default_queue_tasks:
                task = self._tasks.get(task_name)
                if task is not None and task.queue == old:
                    task.queue = queue

    # Tasks ---------------------------------------------------------------------------------

    @property
    def task_cls(self) -> type[Task]:
        """The class of tasks registered without ``base=`` (default ``celeriac.Task``).
        Set it before registering tasks: those registered earlier keep their class."""
        return self._task_cls

    @task_cls.setter
    def task_cls(self, value: type[Task] | str) -> None:
        self._task_cls = task_class(value, "task_cls")

    @property
    def tasks(self) -> dict[str, Task]:
        """The registered tasks by name: this app's own and every ``@shared_task``.

        A registration replaces the dict rather than changing it, so iterating the
        one returned is safe while other threads register tasks."""
        if self._shared_seen != shared.definition_count():
            self._register_shared()
        return self._tasks

    def _register_shared(self) -> None:
        with self._registering:
            added: dict[str, Task] = {}
            for definition in shared.definitions_from(self._shared_seen):
                # Counted first: a definition that fails is not tried again.
                self._shared_seen += 1
                # The app's own task of the same name wins.
                if definition.name in self._tasks or definition.name in added:
                    continue
                try:
                    added[definition.name] = self._make_task(
                        definition.fn, definition.name, definition.base, definition.options
                    )
                except Exception as exc:
                    # One bad definition (one the app's task_cls refuses) must not
                    # take every other task of every app down with it.
                    self._shared_failures[definition.name] = exc
                    log.error(
                        "shared task %s is not registered in app %s: %s: %s",
                        definition.name, self.name, type(exc).__name__, exc,
                    )  # fmt: skip
            if added:
                fresh = {name: task for name, task in added.items() if name not in self._tasks}
                self._tasks = {**self._tasks, **fresh}

    def _make_task(
        self, fn: Callable[..., Any], name: str, base: Any, options: Mapping[str, Any]
    ) -> Task:
        """A task named ``name`` of class ``base`` (default: ``task_cls``) for ``fn``."""
        cls = self._task_cls if base is None else task_class(base, "base")
        task = cls(self, fn, name=name, client=self.client, **cast(TaskOptions, options))
        if not options.get("queue"):
            with self._registering:
                self._default_queue_tasks.add(name)
        return task

    @overload
    def task(self, fn: Callable[..., Any], /) -> Task: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        base: type[Task] | str | None = None,
        **options: Unpack[TaskOptions],
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        base: type[Task] | str | None = None,
        **options: Unpack[TaskOptions],
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a function (``def`` or ``async def``) as a task: ``@app.task`` or
        ``@app.task(name=..., queue=..., max_retries=..., bind=True, base=MyTask, ...)``.

        ``base`` is the ``Task`` subclass to make (a class or ``"module:Class"``;
        default ``app.task_cls``); its class attributes supply defaults for the
        options not given here. Options are checked now, naming the one at fault.

        The default name is ``module.qualname``. Options: ``queue`` (default: the
        app's), ``bind=False``, ``ignore_result=False``, and the retry and time-limit
        options with their defaults on ``celeriac.task.Task`` (``autoretry_for=()``:
        no automatic retries; ``max_retries=3``; see ``celeriac.runoptions``).
        """
        cls = check_options(options, base)

        def register(func: Callable[..., Any]) -> Task:
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            with self._registering:
                task = self._make_task(func, task_name, cls, options)
                self._tasks = {**self._tasks, task_name: task}
            return task

        if fn is not None:
            return register(fn)
        return register

    # Periodic tasks --------------------------------------------------------------------------

    def periodic_task(
        self,
        cron: str | None = None,
        every: float | timedelta | str | None = None,
        *,
        tz: str | None = None,
        name: str | None = None,
        task_name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        concurrency_policy: str = "Allow",
        expires: float | timedelta | None = None,
        jitter: float | timedelta = 0,
        **task_options: Any,
    ) -> Callable[[Callable[..., Any]], Task]:
        """Register a function as a task (as ``@app.task``) that runs on a schedule.

        ``cron`` (5 fields, or 6 with seconds first, or a macro such as ``@daily``),
        read in the zone ``tz`` (default ``app.conf.timezone``, UTC), or ``every``
        (seconds, a ``timedelta`` or ``"5m"``): exactly one. ``name`` names the
        schedule (default: the task name made into a DNS label); ``task_name`` names
        the task (default ``module.qualname``). ``args`` and ``kwargs`` are passed to
        every run. ``concurrency_policy`` (``Allow``, ``Forbid``, ``Replace``) says
        what a slot does while the previous run is unfinished; ``expires`` is how long
        after its slot a run may still start (default: one interval); ``jitter``
        delays each run by up to that many seconds. Other options go to
        ``@app.task``. Nothing is sent until
        ``sync_schedules()``. Mistakes raise ``ValueError`` here, naming the argument.
        """
        if queue is not None:
            names.check_queue_name(queue)
        zone = tz or self.conf.timezone

        def define(task: str, schedule: str) -> PeriodicTask:
            _check_app_schedule_name(schedule)
            return periodic.define(
                name=schedule,
                task=task,
                queue=queue or self.default_queue,
                cron_text=cron,
                every=every,
                tz=zone,
                args=args,
                kwargs=kwargs,
                policy=concurrency_policy,
                expires=expires,
                jitter=jitter,
            )

        # Checked now, before there is a function: a bad cron fails at import time.
        define(task_name or "check", name or "check")

        def register(fn: Callable[..., Any]) -> Task:
            full_name = task_name or f"{fn.__module__}.{fn.__qualname__}"
            definition = define(full_name, name or periodic.schedule_name_for(full_name))
            self._check_new_schedule(definition)
            options = {**task_options, "queue": definition.queue}
            task = self.task(name=full_name, **options)(fn)
            self.periodic_tasks[definition.name] = definition
            return task

        return register

    def add_periodic_task(
        self,
        schedule: float | timedelta | str,
        signature: Signature | Task | shared.SharedTask,
        name: str | None = None,
        *,
        tz: str | None = None,
        queue: str | None = None,
        concurrency_policy: str = "Allow",
        expires: float | timedelta | None = None,
        jitter: float | timedelta = 0,
    ) -> PeriodicTask:
        """Run ``signature`` (``add.s(2, 3)``, or a task) on ``schedule``, as Celery's
        ``add_periodic_task``: seconds or a ``timedelta`` (an interval), a cron string
        (``"0 2 * * *"``, ``"@daily"``) or ``"@every 5m"``.

        The queue is ``queue``, else the signature's, else the task's. A signature's
        ``expires`` (seconds) and ``headers`` carry over; other delivery options do not
        apply to a schedule and raise ``ValueError``. Returns the definition.
        """
        if isinstance(signature, shared.SharedTask):
            signature = signature.resolve(self)
        if isinstance(signature, Task):
            signature = signature.s()
        if not isinstance(signature, Signature):
            raise TypeError(
                f"signature: expected a signature (task.s(...)) or a task, not {signature!r}"
            )
        options = dict(signature.options)
        sig_queue, headers = options.pop("queue", None), options.pop("headers", None)
        sig_expires = options.pop("expires", None)
        if options:
            raise ValueError(
                f"signature: option(s) {', '.join(sorted(options))} do not apply to a periodic task"
            )
        if sig_expires is not None and not isinstance(sig_expires, int | float):
            raise ValueError("signature: expires of a periodic task must be seconds")
        if isinstance(schedule, str) and not schedule.strip().startswith("@every"):
            cron_text, every = schedule, None
        else:
            cron_text, every = None, schedule
        if name is not None:
            _check_app_schedule_name(name)
        definition = periodic.define(
            name=name or periodic.schedule_name_for(signature.task),
            task=signature.task,
            queue=queue or sig_queue or self._task_queue(signature.task),
            cron_text=cron_text,
            every=every,
            tz=tz or self.conf.timezone,
            args=signature.args,
            kwargs=signature.kwargs,
            policy=concurrency_policy,
            expires=expires if expires is not None else sig_expires,
            jitter=jitter,
            headers=headers,
            arguments=("schedule", "schedule"),
        )
        self._check_new_schedule(definition)
        self.periodic_tasks[definition.name] = definition
        return definition

    def _check_new_schedule(self, definition: PeriodicTask) -> None:
        """Refuse a second, different definition under one schedule name."""
        known = self.periodic_tasks.get(definition.name)
        if known is not None and known != definition:
            raise ValueError(
                f"name: schedule {definition.name!r} is already defined (task {known.task}); "
                "give this one another name="
            )

    async def async_sync_schedules(self, prune: bool = False) -> schedules.SyncReport:
        """Publish every periodic task's schedule to NATS (unchanged ones are left alone).

        With ``prune``, also delete the schedules this app does not define on the queues
        it uses (its periodic tasks', its tasks' and its default queue).
        """
        queues = {self.default_queue, *(task.queue for task in self.tasks.values())}
        return await schedules.sync_schedules(
            await self.broker(), self.periodic_tasks.values(), prune=prune, queues=queues
        )

    def sync_schedules(self, prune: bool = False) -> schedules.SyncReport:
        """Blocking twin of ``async_sync_schedules``."""
        return self.client.run_sync(
            lambda: self.async_sync_schedules(prune=prune),
            call="sync_schedules()",
            twin="async_sync_schedules()",
        )

    def _task_queue(self, name: str) -> str:
        task = self.tasks.get(name)
        return task.queue if task is not None else self.default_queue

    def signature(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A signature of a task known only by name (see ``send_task``)."""
        immutable = bool(options.pop("immutable", False))
        options = {"queue": self._task_queue(name), **options}
        return Signature(
            self.client,
            name,
            args,
            kwargs,
            options=options,
            immutable=immutable,
            task_type=self.tasks.get(name),
        )

    def AsyncResult(self, task_id: str) -> async_result.AsyncResult:  # noqa: N802 - Celery's spelling
        """The result handle of ``task_id``."""
        return async_result.AsyncResult(task_id, self.client)

    @property
    def GroupResult(self) -> GroupResults:  # noqa: N802 - Celery's spelling
        """``app.GroupResult(group_id, results)`` (results or task ids) and
        ``app.GroupResult.restore(group_id)``, with this app's client."""
        return GroupResults(self.client)

    # Connections ---------------------------------------------------------------------------

    async def broker(self) -> Broker:
        """The connected broker for the running event loop (one per loop, made on first use)."""
        return await self.client.broker()

    async def aclose(self) -> None:
        """Close this loop's broker, and the background loop used by blocking calls."""
        await self.client.aclose()

    def close(self) -> None:
        """Close the background loop's broker and stop it (blocking calls reopen it)."""
        self.client.close()

    # Submitting ----------------------------------------------------------------------------

    def _send(
        self, name: str, args: Any, kwargs: Any, options: Mapping[str, Any], call: str
    ) -> tuple[Plan, async_result.AsyncResult]:
        item = prepare(name, args, kwargs, options, call=call, default_queue=self._task_queue(name))
        return Plan(items=[item]), async_result.AsyncResult(item.message.id, self.client)

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> async_result.AsyncResult:
        """Send a task by name (it need not be registered here); blocks until enqueued.

        Takes the options of ``Task.apply_async``.
        """
        refuse_inside_event_loop("send_task()", "asend_task()")
        plan, result = self._send(name, args, kwargs, options, "send_task")
        self.client.submit(plan)
        return result

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> async_result.AsyncResult:
        """Async twin of ``send_task``."""
        plan, result = self._send(name, args, kwargs, options, "asend_task")
        await self.client.asubmit(plan)
        return result

    def _batch(self, signatures: Iterable[Canvas]) -> tuple[Plan, list[Any]]:
        plan, results = Plan(), []
        for sig in signatures:
            if not isinstance(sig, Canvas):
                raise TypeError(f"send_many takes signatures (task.s(...)), not {sig!r}")
            part, result = sig.plan()
            plan.extend(part)
            results.append(result)
        return plan, results

    def send_many(self, signatures: Iterable[Canvas]) -> list[Any]:
        """Send many signatures at once, pipelining the publishes; one result each, in order."""
        refuse_inside_event_loop("send_many()", "asend_many()")
        plan, results = self._batch(signatures)
        self.client.submit(plan)
        return results

    async def asend_many(self, signatures: Iterable[Canvas]) -> list[Any]:
        """Async twin of ``send_many``."""
        plan, results = self._batch(signatures)
        await self.client.asubmit(plan)
        return results


def _check_app_schedule_name(name: str) -> None:
    """Refuse a '.' in an app's schedule name: TaskSchedule resources' schedules are
    ``<namespace>.<name>``, and an app's sync must never take one of those over."""
    if isinstance(name, str) and "." in name:
        raise ValueError(
            f"name: {name!r} has a '.', reserved for the schedules of TaskSchedule "
            "resources (<namespace>.<name>); use '-'"
        )


class GroupResults:
    """``app.GroupResult``: makes and restores ``GroupResult``s on one client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(
        self, group_id: str, results: Sequence[async_result.AsyncResult | str] = ()
    ) -> async_result.GroupResult:
        """A group result handle over ``results`` (``AsyncResult``s or task ids)."""
        return async_result.GroupResult(group_id, results, self.client)

    def restore(self, group_id: str) -> async_result.GroupResult | None:
        """The group stored under ``group_id``, or None (``GroupResult.restore``)."""
        return async_result.GroupResult.restore(group_id, self.client)

    async def arestore(self, group_id: str) -> async_result.GroupResult | None:
        """Async twin of ``restore``."""
        return await async_result.GroupResult.arestore(group_id, self.client)


def _set_always_eager(app: Celeriac, on: bool) -> None:
    """``task_always_eager``: run tasks in-process as they are submitted. That is
    ``celeriac.testing``'s eager mode, loaded by name: it runs the worker runtime, a
    layer the SDK never imports (and an SDK-only install does not have)."""
    if not on:
        # Nothing to turn off unless eager mode was ever loaded.
        loaded = sys.modules.get(_EAGER_MODULE)
        if loaded is not None:
            loaded.always_eager(app, False)
        return
    try:
        eager = importlib.import_module(_EAGER_MODULE)
    except ImportError as exc:
        raise ImproperlyConfigured(
            "task_always_eager runs tasks with the worker runtime: "
            f"pip install 'celeriac[worker]' ({exc})"
        ) from None
    eager.always_eager(app, on)
