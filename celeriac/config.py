"""``app.conf``: an app's settings under Celery's names, checked as they are set.

Every setting Celeriac knows is listed in ``SETTINGS`` with its default and check.
Celery settings that Celeriac does not support are listed too, with what to do
instead (``UNSUPPORTED``, ``UNSUPPORTED_PREFIXES``): setting one raises
``ImproperlyConfigured`` saying so, as does any other unknown name, so a migrated
configuration never carries settings that silently do nothing.

The checks are pure functions; the app applies the connection settings to its
client when they change (``Config(on_change=...)``).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import FunctionType, ModuleType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celeriac import runoptions
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol import names
from celeriac.remoteerrors import check_modules

# Schemes nats-py connects with; anything else is another broker's URL.
NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def check_nats_url(value: Any, where: str) -> str:
    """``value`` if it is a NATS URL (or a comma-separated seed list of them).

    A Redis, RabbitMQ, SQS... URL raises ``ImproperlyConfigured`` naming ``where``
    and saying that Celeriac runs on NATS.
    """
    if not isinstance(value, str) or not value.strip():
        raise ImproperlyConfigured(f"{where} must be a NATS URL such as nats://host:4222")
    for server in names.servers(value):
        scheme = server.split("://", 1)[0].lower() if "://" in server else None
        if scheme is not None and scheme not in NATS_SCHEMES:
            raise ImproperlyConfigured(
                f"{where}: {scheme}:// is not supported: Celeriac runs on NATS JetStream, "
                f"give a nats:// URL (e.g. nats://127.0.0.1:4222), not "
                f"{names.display_url(server)!r}"
            )
    return value


# Checks: (setting name, value) -> the value to store, or ImproperlyConfigured.


def _any(key: str, value: Any) -> Any:
    return value


def _nats_url(key: str, value: Any) -> str:
    return check_nats_url(value, key)


def _queue(key: str, value: Any) -> str:
    try:
        return names.check_queue_name(value)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{key}: {exc}") from None


def _number(key: str, value: Any) -> float:
    # The same check as the run options' seconds: a number or a timedelta.
    try:
        return float(runoptions.duration(key, value))
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(str(exc)) from None


def _ttl(key: str, value: Any) -> float:
    # Celery's None (keep results for ever) is Celeriac's 0.
    seconds = 0.0 if value is None else _number(key, value)
    if seconds < 0:
        raise ImproperlyConfigured(f"{key} must be >= 0 seconds (0 keeps results), not {value!r}")
    return seconds


def _positive(key: str, value: Any) -> float:
    seconds = _number(key, value)
    if seconds <= 0:
        raise ImproperlyConfigured(f"{key} must be a number of seconds above 0, not {value!r}")
    return seconds


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ImproperlyConfigured(f"{key} must be True or False, not {value!r}")
    return value


def _zone(key: str, value: Any) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, TypeError, ValueError):
        raise ImproperlyConfigured(
            f"{key}: unknown time zone {value!r} (use an IANA name such as 'Europe/Berlin')"
        ) from None
    return str(value)


def _modules(key: str, value: Any) -> tuple[str, ...]:
    try:
        return check_modules(value, key)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def _only(*accepted: Any, why: str) -> Callable[[str, Any], Any]:
    """A check accepting only the values Celeriac works with (``why`` says why)."""

    def check(key: str, value: Any) -> Any:
        candidate = sorted(value) if isinstance(value, list | tuple | set) else value
        if candidate not in accepted:
            raise ImproperlyConfigured(f"{key}={value!r} is not supported: {why}")
        return value

    return check


@dataclass(frozen=True)
class Setting:
    """A setting Celeriac knows: its default and the check that normalizes a value."""

    default: Any
    check: Callable[[str, Any], Any] = _any
    doc: str = ""


_JSON_ONLY = "Celeriac sends JSON only (never pickle); use 'json'"
_JSON_CONTENT = _only(["json"], ["application/json"], ["application/json", "json"], why=_JSON_ONLY)

# None as a task default means "unset": the task class's own default applies.
SETTINGS: dict[str, Setting] = {
    # Connection and results: the app applies these to its client.
    "broker_url": Setting(None, _nats_url, "the NATS URL (also nats_url)"),
    "broker_connection_timeout": Setting(5.0, _positive, "seconds the first connect may take"),
    "task_default_queue": Setting(names.DEFAULT_QUEUE, _queue, "queue of tasks naming none"),
    "result_expires": Setting(86400.0, _ttl, "seconds results are kept (0 or None: for ever)"),
    "result_exception_modules": Setting((), _modules, "modules whose exceptions get() re-raises"),
    "timezone": Setting("UTC", _zone, "the default zone of periodic crons"),
    # Eager mode (celeriac.testing reads these).
    "task_always_eager": Setting(False, _bool, "run tasks in-process on delay()"),
    "task_eager_propagates": Setting(False, _bool, "eager failures raise in the caller"),
    "task_store_eager_result": Setting(False, _bool, "eager results are stored"),
    # Accepted with the one value Celeriac has.
    "task_serializer": Setting("json", _only("json", why=_JSON_ONLY)),
    "result_serializer": Setting("json", _only("json", why=_JSON_ONLY)),
    "accept_content": Setting(["json"], _JSON_CONTENT),
    "result_accept_content": Setting(None, lambda k, v: v if v is None else _JSON_CONTENT(k, v)),
    "enable_utc": Setting(True, _only(True, why="Celeriac keeps times in UTC")),
    "task_acks_late": Setting(
        True, _only(True, why="a task is acknowledged after it finishes, always (at-least-once)")
    ),
    "task_track_started": Setting(
        True, _only(True, why="STARTED is recorded for every task that runs longer than 50 ms")
    ),
}


def _unset_or(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """A run option's own check (celeriac.runoptions), with None meaning unset."""

    def checked(key: str, value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(key, value)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(str(exc)) from None

    return checked


# App-wide task defaults: task_<option> for every run option (task_max_retries,
# task_autoretry_for, ...). None: unset, the Task class's default applies.
SETTINGS.update(
    {
        runoptions.CONF_KEYS[option]: Setting(None, _unset_or(check), f"default {option}")
        for option, check in runoptions.RUN_OPTIONS.items()
    }
)


ALIASES = {"nats_url": "broker_url"}

_RESULTS_IN_NATS = (
    "results are kept in NATS JetStream (the celeriac_results bucket): there is no result "
    "backend to configure; result_expires sets how long they stay"
)
_NO_ROUTING = (
    "Celeriac has no exchanges or routing keys: a task goes to its queue "
    "(@app.task(queue=...) or apply_async(queue=...))"
)
_WORKER_CLI = "set it on the worker: celeriac worker options, or the WorkerPool spec"

# Celery settings Celeriac does not support, and what to do instead.
UNSUPPORTED: dict[str, str] = {
    "result_backend": _RESULTS_IN_NATS,
    "broker_transport": "Celeriac runs on NATS JetStream only; broker_url is a nats:// URL",
    "broker_transport_options": (
        "there are no transport options; queue limits (retention, max deliveries) are set "
        "on the TaskQueue resource"
    ),
    "broker_connection_retry": "after the first connect, NATS reconnects by itself, always",
    "broker_connection_retry_on_startup": (
        "the first connect waits up to broker_connection_timeout; remove it"
    ),
    "broker_connection_max_retries": "NATS reconnects for as long as an outage lasts",
    "broker_use_ssl": (
        "give TLS files through NatsAuth (ca.crt, tls.crt, tls.key) or CELERIAC_NATS_AUTH_DIR"
    ),
    "broker_login_method": "give credentials through NatsAuth or CELERIAC_NATS_AUTH_DIR",
    "broker_pool_limit": "an app keeps one NATS connection per event loop",
    "broker_heartbeat": "NATS pings the connection itself",
    "broker_read_url": "give one broker_url (a comma-separated seed list for a cluster)",
    "broker_write_url": "give one broker_url (a comma-separated seed list for a cluster)",
    "broker_failover_strategy": "a comma-separated broker_url is a seed list; NATS fails over",
    "task_routes": _NO_ROUTING,
    "task_queues": (
        "queues are TaskQueue resources under Kubernetes; elsewhere a queue's stream is "
        "created on first use"
    ),
    "task_create_missing_queues": "use Celeriac(declare_queues=...) or CELERIAC_DECLARE_QUEUES",
    "task_default_exchange": _NO_ROUTING,
    "task_default_exchange_type": _NO_ROUTING,
    "task_default_routing_key": _NO_ROUTING,
    "task_default_delivery_mode": "messages are always stored by JetStream",
    "task_default_priority": "there are no priorities: send urgent work to a queue of its own",
    "task_queue_max_priority": "there are no priorities: send urgent work to a queue of its own",
    "task_inherit_parent_priority": "there are no priorities",
    "task_default_rate_limit": "there are no rate limits: bound concurrency with -c instead",
    "task_annotations": "set options on the task (@app.task(...)) or on a base= class",
    "task_compression": "messages are not compressed",
    "result_compression": "results are not compressed",
    "task_protocol": "Celeriac has its own JSON envelope (docs/protocol.md)",
    "task_reject_on_worker_lost": "a task whose worker died is always delivered again",
    "task_acks_on_failure_or_timeout": "failed tasks end in the dead-letter stream",
    "task_publish_retry": (
        "a submit waits for JetStream's ack and raises PublishError; send again with the "
        "same task_id"
    ),
    "task_publish_retry_policy": (
        "a submit waits for JetStream's ack and raises PublishError; send again with the "
        "same task_id"
    ),
    "task_send_sent_event": "task events come from workers: celeriac worker --events",
    "task_ignore_result": "give ignore_result=True on the task or in apply_async",
    "task_remote_tracebacks": "the worker's traceback is on the error (.traceback)",
    "task_allow_error_cb_on_chord_header": "link_error on chord members is not supported",
    "result_extended": "records always carry the task name, retries, worker and date_done",
    "result_persistent": "results are stored in JetStream, always",
    "result_cache_max": "results are not cached in the client",
    "result_chord_join_timeout": "chords are joined by the workers, not polled",
    "result_chord_retry_interval": "chords are joined by the workers, not polled",
    "result_backend_always_retry": _RESULTS_IN_NATS,
    "result_backend_max_retries": _RESULTS_IN_NATS,
    "result_backend_transport_options": _RESULTS_IN_NATS,
    "result_backend_thread_safe": _RESULTS_IN_NATS,
    "event_serializer": "task events are JSON",
    "imports": "import your task modules from the app's module (or use Django autodiscovery)",
    "include": "import your task modules from the app's module (or use Django autodiscovery)",
    "worker_prefetch_multiplier": (
        "a worker never holds more messages than it has free slots; set the concurrency "
        "(celeriac worker -c N, or the WorkerPool's concurrency)"
    ),
    "worker_concurrency": "use celeriac worker -c N, or the WorkerPool's concurrency",
    "worker_pool": "use celeriac worker --pool, or the WorkerPool spec",
    "worker_max_tasks_per_child": (
        "a worker option: celeriac worker --pool processes --max-tasks-per-child N"
    ),
    "worker_max_memory_per_child": (
        "use celeriac worker --max-tasks-per-child N, or a memory limit on the container "
        "(the WorkerPool's resources)"
    ),
    "worker_send_task_events": "use celeriac worker --events",
    "security_key": "sign task messages with signing_keys (Celeriac(signing_keys=...))",
    "security_certificate": "sign task messages with signing_keys (Celeriac(signing_keys=...))",
    "security_cert_store": "sign task messages with signing_keys (Celeriac(signing_keys=...))",
    "beat_schedule": (
        "declare periodic tasks with app.add_periodic_task / @app.periodic_task and publish "
        "them with celeriac schedule sync (docs/sdk.md, Migrating from Celery beat)"
    ),
}

# Whole families of Celery settings, by prefix.
UNSUPPORTED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("worker_", _WORKER_CLI),
    ("beat_", "there is no beat: nats-server fires periodic tasks (celeriac schedule sync)"),
    ("broker_", "Celeriac connects to NATS with broker_url and broker_connection_timeout only"),
    ("result_backend", _RESULTS_IN_NATS),
    ("redis_", _RESULTS_IN_NATS),
    ("database_", _RESULTS_IN_NATS),
    ("cache_", _RESULTS_IN_NATS),
    ("mongodb_", _RESULTS_IN_NATS),
    ("cassandra_", _RESULTS_IN_NATS),
    ("elasticsearch_", _RESULTS_IN_NATS),
    ("s3_", _RESULTS_IN_NATS),
    ("azureblockblob_", _RESULTS_IN_NATS),
    ("couchbase_", _RESULTS_IN_NATS),
    ("arangodb_", _RESULTS_IN_NATS),
    ("cosmosdbsql_", _RESULTS_IN_NATS),
    ("event_", "task events are published by celeriac worker --events (docs/admin.md)"),
    ("control_", "there is no remote control: revoke is durable, inspect with celeriac inspect"),
    ("security_", "sign task messages with signing_keys (Celeriac(signing_keys=...))"),
)


def canonical(key: Any) -> str:
    """The setting name ``key`` stands for; ``ImproperlyConfigured`` when there is none."""
    if not isinstance(key, str):
        raise ImproperlyConfigured(f"setting names are strings, not {key!r}")
    if key != key.lower():
        raise ImproperlyConfigured(
            f"setting {key!r}: names are lower-case ({key.lower()!r}); upper-case names need "
            "a prefix and config_from_object(..., namespace='CELERIAC')"
        )
    name = ALIASES.get(key, key)
    if name in SETTINGS:
        return name
    advice = UNSUPPORTED.get(name) or next(
        (why for prefix, why in UNSUPPORTED_PREFIXES if name.startswith(prefix)), None
    )
    if advice is not None:
        raise ImproperlyConfigured(f"setting {name!r} is not supported by Celeriac: {advice}")
    close = difflib.get_close_matches(name, [*SETTINGS, *ALIASES], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ImproperlyConfigured(
        f"unknown setting {name!r}{hint}; Celeriac's settings are listed in docs/sdk.md (Settings)"
    )


def check_setting(key: Any, value: Any) -> tuple[str, Any]:
    """``(name, value)`` as stored, or ``ImproperlyConfigured`` naming the setting."""
    name = canonical(key)
    return name, SETTINGS[name].check(name, value)


def check_settings(items: Mapping[Any, Any]) -> dict[str, Any]:
    """Every item checked (all of them, before any is applied)."""
    return dict(check_setting(key, value) for key, value in items.items())


def _is_setting_value(value: Any) -> bool:
    # A config module also holds its imports and helpers: those are not settings.
    return not isinstance(value, ModuleType | FunctionType | type)


def settings_from_object(source: Any, namespace: str | None = None) -> dict[str, Any]:
    """The settings ``source`` (a mapping, module or object) holds, by raw name, unchecked.

    With ``namespace="CELERIAC"`` only names starting ``CELERIAC_`` count, with the
    prefix taken off and lower-cased (``CELERIAC_BROKER_URL`` -> ``broker_url``), as
    Django settings hold them. Without, a module's or object's lower-case public
    attributes are the settings; upper-case ones are left alone (a Django settings
    module's ``DEBUG``), except names that look meant for Celery or Celeriac, which
    raise ``ImproperlyConfigured`` asking for the namespace.
    """
    if isinstance(source, Mapping):
        raw = {str(k): v for k, v in source.items()}
        from_mapping = True
    else:
        raw = {n: getattr(source, n) for n in dir(source) if not n.startswith("_")}
        from_mapping = False
    found: dict[str, Any] = {}
    for name, value in raw.items():
        if namespace:
            prefix = f"{namespace}_"
            if name.startswith(prefix) and len(name) > len(prefix):
                found[name[len(prefix) :].lower()] = value
            continue
        if from_mapping:
            found[name] = value
        elif name == name.lower():
            if _is_setting_value(value):
                found[name] = value
        elif _looks_meant_for_us(name):
            first = name.split("_", 1)[0]
            raise ImproperlyConfigured(
                f"setting {name!r} is upper-case: give config_from_object(..., "
                f"namespace={first!r}), or name it {name.lower()!r}"
            )
    return found


def _looks_meant_for_us(name: str) -> bool:
    lower = name.lower()
    return (
        name.startswith(("CELERY_", "CELERIAC_"))
        or lower in SETTINGS
        or lower in UNSUPPORTED
        or lower in ALIASES
    )


def load_source(spec: str) -> Any:
    """The object ``spec`` names: ``"package.module"`` or ``"package.module:attribute"``
    (``"django.conf:settings"``). Raises ``ImportError`` when it cannot be found."""
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # "proj.settings_object": a module attribute rather than a module.
            if exc.name != module_name or "." not in module_name:
                raise
            module_name, _, attribute = module_name.rpartition(".")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return obj


class Config(Mapping[str, Any]):
    """An app's settings: ``conf.broker_url``, ``conf["timezone"]``, ``conf.update(...)``.

    Every known setting is readable (``SETTINGS`` gives the defaults); setting an
    unknown or unsupported one raises ``ImproperlyConfigured`` naming it. A setting
    left at None is unset: ``conf.get(name, default)`` returns ``default`` for it.
    ``on_change`` gets each batch of checked changes before they are stored; it may
    refuse them by raising.
    """

    def __init__(
        self,
        initial: Mapping[str, Any] | None = None,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        values = {name: setting.default for name, setting in SETTINGS.items()}
        values.update(check_settings(initial or {}))
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_on_change", on_change)

    _values: dict[str, Any]
    _on_change: Callable[[dict[str, Any]], None] | None

    def __getitem__(self, key: str) -> Any:
        return self._values[ALIASES.get(key, key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._values.items() if v != SETTINGS[k].default}
        return f"<Config {changed!r}>"

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is unknown or unset (None)."""
        value = self._values.get(ALIASES.get(key, key))
        return default if value is None else value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"unknown setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self.update({name: value})

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, other: Mapping[str, Any] | None = None, /, **settings: Any) -> None:
        """Set several settings at once: all are checked before any changes."""
        changes = check_settings({**(other or {}), **settings})
        if self._on_change is not None:
            self._on_change(changes)
        self._values.update(changes)

    def setdefault(self, key: str, default: Any = None) -> Any:
        """The value of ``key``; when unset (None), set it to ``default`` first."""
        if self.get(key) is None and default is not None:
            self.update({key: default})
        return self[canonical(key)]
