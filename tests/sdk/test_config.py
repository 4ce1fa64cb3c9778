"""``app.conf`` and ``config_from_object``: known settings, Celery settings Celeriac
refuses, namespaces, and what a change does to the app (no server needed)."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from celeriac import config
from celeriac.app import Celeriac
from celeriac.config import Config, check_setting, settings_from_object
from celeriac.exceptions import ImproperlyConfigured


@pytest.fixture
def app() -> Iterator[Celeriac]:
    application = Celeriac("conf-tests", "nats://127.0.0.1:4999", set_as_current=False)
    yield application
    application.close()


@pytest.mark.parametrize(
    ("key", "value", "stored"),
    [
        ("broker_url", "nats://nats.celeriac:4222", ("broker_url", "nats://nats.celeriac:4222")),
        ("nats_url", "tls://a:4222,tls://b:4222", ("broker_url", "tls://a:4222,tls://b:4222")),
        ("broker_url", "127.0.0.1:4222", ("broker_url", "127.0.0.1:4222")),
        ("task_default_queue", "emails", ("task_default_queue", "emails")),
        ("result_expires", 3600, ("result_expires", 3600.0)),
        ("result_expires", timedelta(hours=2), ("result_expires", 7200.0)),
        ("result_expires", None, ("result_expires", 0.0)),
        ("broker_connection_timeout", 2, ("broker_connection_timeout", 2.0)),
        ("timezone", "Europe/Berlin", ("timezone", "Europe/Berlin")),
        ("task_always_eager", True, ("task_always_eager", True)),
        (
            "result_exception_modules",
            ["shop.errors"],
            ("result_exception_modules", ("shop.errors",)),
        ),
        ("task_serializer", "json", ("task_serializer", "json")),
        ("accept_content", ["application/json"], ("accept_content", ["application/json"])),
        ("task_acks_late", True, ("task_acks_late", True)),
        ("task_max_retries", 5, ("task_max_retries", 5)),
        ("task_max_retries", None, ("task_max_retries", None)),
        ("task_autoretry_for", (ConnectionError,), ("task_autoretry_for", (ConnectionError,))),
        ("task_time_limit", 30, ("task_time_limit", 30)),
        ("task_time_limit", timedelta(minutes=1), ("task_time_limit", 60.0)),
        ("task_default_retry_delay", timedelta(seconds=5), ("task_default_retry_delay", 5.0)),
        ("broker_connection_timeout", timedelta(seconds=3), ("broker_connection_timeout", 3.0)),
    ],
)
def test_known_settings_are_checked_and_normalized(
    key: str, value: Any, stored: tuple[str, Any]
) -> None:
    assert check_setting(key, value) == stored


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("broker_url", "redis://localhost:6379/0", r"broker_url: redis:// .*runs on NATS"),
        ("broker_url", "amqp://guest@localhost//", r"amqp:// .*runs on NATS"),
        ("broker_url", "nats://a:4222,redis://b", r"redis:// .*runs on NATS"),
        ("broker_url", "", r"broker_url must be a NATS URL"),
        ("task_default_queue", "Emails!", r"task_default_queue: invalid queue name"),
        ("result_expires", -1, r"result_expires must be >= 0"),
        ("result_expires", "1d", r"result_expires must be a number of seconds"),
        ("broker_connection_timeout", 0, r"broker_connection_timeout must be .* above 0"),
        ("timezone", "Mars/Olympus", r"timezone: unknown time zone 'Mars/Olympus'"),
        ("task_always_eager", "yes", r"task_always_eager must be True or False"),
        ("result_exception_modules", "shop.errors", r"must be a list of module names"),
        ("result_exception_modules", ["shop errors"], r"is not a module name"),
        ("task_serializer", "pickle", r"task_serializer='pickle' is not supported: .*JSON"),
        ("accept_content", ["pickle", "json"], r"accept_content=.* is not supported"),
        ("task_acks_late", False, r"acknowledged after it finishes"),
        ("enable_utc", False, r"UTC"),
        ("task_max_retries", -1, r"task_max_retries must be from 0"),
        ("task_autoretry_for", (ValueError, 3), r"task_autoretry_for .*not an exception class"),
        ("task_time_limit", 0, r"task_time_limit must be above 0"),
        ("task_time_limit", "1m", r"task_time_limit must be a number of seconds"),
        ("result_expires", float("nan"), r"result_expires must be a number of seconds"),
    ],
)
def test_bad_values_name_the_setting(key: str, value: Any, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        check_setting(key, value)


@pytest.mark.parametrize(
    ("key", "advice"),
    [
        ("result_backend", r"kept in NATS JetStream"),
        ("worker_prefetch_multiplier", r"never holds more messages than .* concurrency"),
        ("broker_transport_options", r"TaskQueue"),
        ("task_routes", r"no exchanges or routing keys"),
        ("beat_schedule", r"add_periodic_task"),
        ("beat_max_loop_interval", r"there is no beat"),
        ("worker_disable_rate_limits", r"celeriac worker options"),
        ("redis_max_connections", r"kept in NATS JetStream"),
        ("broker_connection_retry_on_startup", r"broker_connection_timeout"),
        ("task_ignore_result", r"ignore_result=True"),
        ("worker_max_tasks_per_child", r"celeriac worker --pool processes --max-tasks-per-child"),
        ("worker_max_memory_per_child", r"--max-tasks-per-child N, or a memory limit"),
    ],
)
def test_unsupported_celery_settings_say_what_to_do(key: str, advice: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf"setting '{key}' is not supported.*{advice}"):
        check_setting(key, "anything")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("brokr_url", r"unknown setting 'brokr_url' \(did you mean 'broker_url'\?\)"),
        ("always_eager", r"unknown setting 'always_eager' \(did you mean 'task_always_eager'\?\)"),
        ("frobnicate", r"unknown setting 'frobnicate'; Celeriac's settings"),
        ("BROKER_URL", r"names are lower-case \('broker_url'\).*namespace="),
        (42, r"setting names are strings"),
    ],
)
def test_unknown_settings_fail_naming_the_key(key: Any, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        check_setting(key, "x")


def test_every_known_setting_accepts_its_own_default() -> None:
    for key, setting in config.SETTINGS.items():
        if setting.default is not None:
            assert check_setting(key, setting.default)[0] == key


def test_config_reads_like_celerys() -> None:
    conf = Config()
    assert conf.task_default_queue == "default" and conf["timezone"] == "UTC"
    assert conf.get("task_max_retries") is None  # unset
    assert conf.get("task_max_retries", 3) == 3
    assert conf.get("no_such_setting", "fallback") == "fallback"
    conf.task_max_retries = 7
    conf["timezone"] = "Asia/Tokyo"
    conf.update({"task_always_eager": True}, result_expires=60)
    assert (conf.task_max_retries, conf.timezone, conf.task_always_eager) == (7, "Asia/Tokyo", True)
    assert conf.result_expires == 60.0
    assert conf.setdefault("task_time_limit", 30) == 30
    assert conf.setdefault("task_time_limit", 99) == 30
    assert "broker_url" in conf and len(conf) == len(config.SETTINGS)
    assert conf["nats_url"] is conf["broker_url"]
    with pytest.raises(AttributeError, match="unknown setting 'nope'"):
        _ = conf.nope
    with pytest.raises(KeyError):
        _ = conf["nope"]


def test_an_update_with_one_bad_setting_changes_nothing() -> None:
    conf = Config()
    with pytest.raises(ImproperlyConfigured, match="result_backend"):
        conf.update(task_default_queue="emails", result_backend="redis://")
    assert conf.task_default_queue == "default"


def test_namespace_reads_prefixed_names_only() -> None:
    settings = types.SimpleNamespace(
        DEBUG=True,
        INSTALLED_APPS=["shop"],
        CELERIAC=dict(broker_url="nats://ignored"),  # no "_": not in the namespace
        CELERIAC_BROKER_URL="nats://nats:4222",
        CELERIAC_TASK_DEFAULT_QUEUE="orders",
        CELERIAC_RESULT_EXPIRES=600,
    )
    assert settings_from_object(settings, namespace="CELERIAC") == {
        "broker_url": "nats://nats:4222",
        "task_default_queue": "orders",
        "result_expires": 600,
    }
    assert settings_from_object({"CELERY_TIMEZONE": "UTC", "X": 1}, namespace="CELERY") == {
        "timezone": "UTC"
    }


def test_a_module_without_namespace_gives_its_lower_case_settings() -> None:
    module = types.ModuleType("celeriacconfig_example")
    module.broker_url = "nats://nats:4222"  # type: ignore[attr-defined]
    module.timezone = "Europe/Paris"  # type: ignore[attr-defined]
    module.os = sys  # type: ignore[attr-defined]  # an import, not a setting
    module.helper = lambda: None  # type: ignore[attr-defined]
    module.DEBUG = True  # type: ignore[attr-defined]  # somebody else's upper-case name
    assert settings_from_object(module) == {
        "broker_url": "nats://nats:4222",
        "timezone": "Europe/Paris",
    }
    module.CELERY_TASK_ALWAYS_EAGER = True  # type: ignore[attr-defined]
    with pytest.raises(ImproperlyConfigured, match=r"namespace='CELERY'"):
        settings_from_object(module)


def test_config_from_object_applies_to_the_app(
    app: Celeriac, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("sdk_conf_module")
    module.CELERIAC_BROKER_URL = "nats://from-settings:4222"  # type: ignore[attr-defined]
    module.CELERIAC_TASK_DEFAULT_QUEUE = "orders"  # type: ignore[attr-defined]
    module.CELERIAC_RESULT_EXPIRES = 120  # type: ignore[attr-defined]
    module.CELERIAC_BROKER_CONNECTION_TIMEOUT = 1.5  # type: ignore[attr-defined]
    module.CELERIAC_RESULT_EXCEPTION_MODULES = ["shop.errors"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sdk_conf_module", module)

    @app.task(name="conf.before")
    def before() -> None: ...

    @app.task(name="conf.pinned", queue="pinned")
    def pinned() -> None: ...

    app.config_from_object("sdk_conf_module", namespace="CELERIAC")
    assert app.nats_url == app.client.nats_url == "nats://from-settings:4222"
    assert app.default_queue == "orders" and app.result_ttl == 120.0
    assert app.connect_timeout == 1.5
    assert app.client.exception_modules == ("builtins", "celeriac.exceptions", "shop.errors")
    # Tasks registered without queue= follow the default queue; pinned ones stay.
    assert (app.tasks["conf.before"].queue, app.tasks["conf.pinned"].queue) == ("orders", "pinned")
    app.nats_url = "nats://again:4222"
    assert app.conf.broker_url == "nats://again:4222"


def test_config_from_object_errors_name_the_source(app: Celeriac) -> None:
    with pytest.raises(
        ImproperlyConfigured,
        match=r"config_from_object\(dict\) \(namespace 'CELERY'\): setting "
        r"'worker_prefetch_multiplier' is not supported",
    ):
        app.config_from_object({"CELERY_WORKER_PREFETCH_MULTIPLIER": 1}, namespace="CELERY")
    with pytest.raises(ModuleNotFoundError):
        app.config_from_object("no_such_module_for_celeriac")
    app.config_from_object("no_such_module_for_celeriac", silent=True)  # ignored
    app.config_from_object("celeriac.config:SETTINGS", namespace="X")  # nothing prefixed X_
    assert app.conf.broker_url == "nats://127.0.0.1:4999"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"broker": "redis://localhost:6379"}, r"broker: redis:// .*runs on NATS"),
        ({"broker": "amqp://guest@rabbit//"}, r"broker: amqp://"),
        ({"nats_url": "nats://a:4222", "broker": "nats://b:4222"}, r"not both"),
        ({"backend": "redis://localhost"}, r"backend: results are kept in NATS JetStream"),
    ],
)
def test_constructor_refuses_other_brokers(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        Celeriac("refused", set_as_current=False, **kwargs)


def test_broker_is_a_synonym_of_nats_url() -> None:
    app = Celeriac("broker-arg", broker="nats://10.1.2.3:4222", set_as_current=False)
    assert app.nats_url == app.conf.broker_url == "nats://10.1.2.3:4222"


def test_timezone_is_the_default_zone_of_periodic_tasks(app: Celeriac) -> None:
    app.conf.timezone = "Europe/Berlin"

    @app.periodic_task("0 2 * * *", name="conf-nightly")
    def nightly() -> None: ...

    definition = app.add_periodic_task("@daily", nightly.s(), name="conf-daily")
    assert app.periodic_tasks["conf-nightly"].time_zone == definition.time_zone == "Europe/Berlin"
    assert (
        app.add_periodic_task("@daily", nightly.s(), name="conf-utc", tz="UTC").time_zone == "UTC"
    )


# An SDK-only install (`pip install celeriac`): the worker extra's packages are missing,
# so the worker runtime, and eager mode with it, cannot be imported.
_SDK_ONLY = """
import sys
sys.modules["prometheus_client"] = None
sys.modules["aiohttp"] = None
from celeriac.app import Celeriac
from celeriac.exceptions import ImproperlyConfigured
app = Celeriac("sdk-only", "nats://127.0.0.1:1", set_as_current=False)
try:
    app.conf.task_always_eager = {value}
except ImproperlyConfigured as exc:
    print("refused:", exc)
else:
    print("stored:", app.conf.task_always_eager)
print("eager loaded:", "celeriac.testing.eager" in sys.modules)
"""


@pytest.mark.parametrize(
    ("value", "output"),
    [
        (False, "stored: False\neager loaded: False\n"),
        (True, "refused: task_always_eager runs tasks with the worker runtime: "
               "pip install 'celeriac[worker]'"),
    ],
)  # fmt: skip
def test_task_always_eager_on_an_sdk_only_install(value: bool, output: str) -> None:
    """Turning eager mode off loads nothing; turning it on says what to install."""
    done = subprocess.run(
        [sys.executable, "-c", _SDK_ONLY.format(value=value)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.startswith(output), done.stdout + done.stderr


def test_task_always_eager_off_again_leaves_eager_mode(app: Celeriac) -> None:
    from celeriac.testing.eager import worker_of

    app.conf.task_always_eager = True
    assert worker_of(app) is not None
    app.conf.task_always_eager = False
    worker = worker_of(app)
    assert worker is None or worker.server.on_enqueued is None
