"""``celeriac.contrib.django.setup``: settings.CELERIAC, the task class, task discovery,
and a worker process importing a Django project's app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured as DjangoImproperlyConfigured
from django.test import override_settings

from celeriac.app import Celeriac
from celeriac.contrib.django import (
    DjangoTask,
    SettingsError,
    TaskDiscoveryError,
    autodiscover_tasks,
    conf_settings,
    setup,
)
from celeriac.exceptions import ImproperlyConfigured
from celeriac.task import Task
from tests.django.conftest import SETTINGS, SHOP

SHOP_TASKS = ["giftcards.tasks.card_balance", "orders.tasks.process_order"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, {}),
        ({"broker_url": "nats://a:4222"}, {"broker_url": "nats://a:4222"}),
        ({"nats_url": "nats://a:4222"}, {"broker_url": "nats://a:4222"}),
        ({"default_queue": "orders"}, {"task_default_queue": "orders"}),
        ({"task_default_queue": "orders"}, {"task_default_queue": "orders"}),
        ({"result_ttl": 60}, {"result_expires": 60.0}),
        ({"result_expires": timedelta(hours=1)}, {"result_expires": 3600.0}),
        ({"connect_timeout": 2}, {"broker_connection_timeout": 2.0}),
        ({"task_always_eager": True}, {"task_always_eager": True}),
    ],
)
def test_settings_map_onto_conf(value: dict[str, Any], expected: dict[str, Any]) -> None:
    assert conf_settings(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["nats://a:4222"], "settings.CELERIAC must be a dict of Celeriac settings, not list"),
        ({"BROKER_URL": "nats://a"}, "settings.CELERIAC['BROKER_URL']: keys are lower-case"),
        ({"CELERY_TASK_TIME_LIMIT": 5}, "settings.CELERIAC['CELERY_TASK_TIME_LIMIT']: keys are "),
        (
            {"nats_ur": "nats://a"},
            "settings.CELERIAC['nats_ur']: unknown setting 'nats_ur' (did you mean 'nats_url'?)",
        ),
        ({"result_backend": "redis://"}, "settings.CELERIAC['result_backend']: setting "),
        ({"broker_url": "redis://r:6379"}, "settings.CELERIAC['broker_url']: broker_url: redis"),
        ({"default_queue": "Not A Queue"}, "settings.CELERIAC['default_queue']: task_default"),
        ({"result_ttl": -1}, "settings.CELERIAC['result_ttl']: result_expires must be >= 0"),
        (
            {"nats_url": "nats://a", "broker_url": "nats://b"},
            "settings.CELERIAC: 'nats_url' and 'broker_url' are the same setting",
        ),
        ({1: "x"}, "settings.CELERIAC: keys are setting names, not 1"),
    ],
)
def test_bad_settings_fail_naming_the_key(value: object, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        conf_settings(value)
    assert str(caught.value).startswith(message)
    # Whichever ImproperlyConfigured the project catches.
    assert isinstance(caught.value, DjangoImproperlyConfigured)
    assert isinstance(caught.value, ImproperlyConfigured)


def test_the_shop_app_has_its_settings(shop: Celeriac, shop_env: dict[str, str]) -> None:
    assert shop.nats_url == shop_env["CELERIAC_NATS_URL"]
    assert shop.default_queue == shop_env["SHOP_QUEUE"]
    assert shop.result_ttl == 3600
    assert shop.conf.task_default_queue == shop_env["SHOP_QUEUE"]
    assert shop.tasks["orders.tasks.process_order"].queue == shop_env["SHOP_QUEUE"]


def test_setup_applies_settings_celeriac(shop: Celeriac) -> None:
    app = Celeriac("settings-test", set_as_current=False)
    celeriac = {"broker_url": "nats://10.0.0.1:4222", "default_queue": "billing"}
    with override_settings(CELERIAC=celeriac):
        assert setup(app, autodiscover=False) is app
    assert (app.nats_url, app.default_queue) == ("nats://10.0.0.1:4222", "billing")


def test_task_defaults_in_settings_reach_tasks_registered_before(shop: Celeriac) -> None:
    """Django applies settings.CELERIAC once its apps are loaded, after a tasks module
    may have registered its tasks: those follow the task_* defaults too."""
    app = Celeriac("settings-test", set_as_current=False)

    @app.task
    def fetch() -> None: ...

    @app.task(max_retries=1)
    def own() -> None: ...

    celeriac = {
        "task_autoretry_for": ("builtins.ConnectionError",),
        "task_max_retries": 7,
        "task_time_limit": timedelta(minutes=5),
    }
    with override_settings(CELERIAC=celeriac):
        setup(app, autodiscover=False)
    assert (fetch.autoretry_for, fetch.max_retries, fetch.time_limit) == (
        (ConnectionError,),
        7,
        300.0,
    )
    assert (own.autoretry_for, own.max_retries) == ((ConnectionError,), 1)

    @app.task
    def later() -> None: ...

    assert isinstance(later, DjangoTask) and later.max_retries == 7


def test_setup_reads_another_setting_when_told(shop: Celeriac) -> None:
    app = Celeriac("settings-test", set_as_current=False)
    with override_settings(BILLING_CELERIAC={"result_ttl": 0}):
        setup(app, setting="BILLING_CELERIAC", autodiscover=False)
    assert app.result_ttl == 0


def test_a_bad_key_fails_setup_and_changes_nothing(shop: Celeriac) -> None:
    app = Celeriac("settings-test", "nats://127.0.0.1:1", set_as_current=False)
    with (
        override_settings(CELERIAC={"default_queue": "billing", "brokr_url": "nats://b"}),
        pytest.raises(SettingsError, match=r"settings.CELERIAC\['brokr_url'\].*broker_url"),
    ):
        setup(app, autodiscover=False)
    assert (app.nats_url, app.default_queue) == ("nats://127.0.0.1:1", "default")


def test_tasks_get_the_on_commit_methods(shop: Celeriac) -> None:
    assert shop.task_cls is DjangoTask
    task = shop.tasks["orders.tasks.process_order"]
    assert isinstance(task, DjangoTask)
    assert callable(task.delay_on_commit) and callable(task.apply_async_on_commit)

    app = Celeriac("task-class-test", set_as_current=False)
    setup(app, autodiscover=False)

    @app.task
    def ping() -> str:
        return "pong"

    assert isinstance(ping, DjangoTask)


def test_a_task_class_of_another_kind_is_refused(shop: Celeriac) -> None:
    class Audited(Task):
        pass

    class AuditedDjango(DjangoTask):
        pass

    with pytest.raises(SettingsError, match="Audited does not derive from DjangoTask"):
        setup(
            Celeriac("task-class-test", task_cls=Audited, set_as_current=False), autodiscover=False
        )
    app = setup(
        Celeriac("task-class-test", task_cls=AuditedDjango, set_as_current=False),
        autodiscover=False,
    )
    assert app.task_cls is AuditedDjango


def test_autodiscovery_imports_the_tasks_of_installed_apps(shop: Celeriac) -> None:
    assert autodiscover_tasks(shop) == ["orders.tasks", "giftcards.tasks"]
    # Shared tasks of modules other tests imported belong to every app too.
    assert sorted(name for name in shop.tasks if name in SHOP_TASKS) == SHOP_TASKS
    assert autodiscover_tasks(shop, ["giftcards", "django.contrib.contenttypes"]) == [
        "giftcards.tasks"
    ]
    assert autodiscover_tasks(shop, ["orders"], related_name="views") == ["orders.views"]


def test_a_tasks_module_that_fails_to_import_is_named(shop: Celeriac) -> None:
    from django.conf import settings

    with (
        override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "brokenapp"]),
        pytest.raises(TaskDiscoveryError, match=r"brokenapp\.tasks failed to import") as caught,
    ):
        autodiscover_tasks(shop)
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    assert "no_such_module_for_celeriac_tests" in str(caught.value)


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter from the project folder."""
    return run([sys.executable, "-c", code], env)


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` from the project folder; its exit code is for the test to check."""
    return subprocess.run(
        argv, check=False, cwd=SHOP, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_fresh_process_importing_the_project_sets_django_up(shop_env: dict[str, str]) -> None:
    # What `celeriac worker -A shopsite` and each `--pool processes` child do first.
    code = (
        "import json, django.apps, shopsite\n"
        "print(json.dumps([django.apps.apps.ready, sorted(shopsite.app.tasks)]))"
    )
    done = run_python(code, {**os.environ, **shop_env})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, SHOP_TASKS]


@pytest.mark.parametrize(
    "settings_module",
    [
        "shopsite.settings",  # the project's own: its package imports the app module
        SETTINGS,  # outside the project, importing it: `from shopsite.settings import *`
    ],
)
def test_manage_py_finishes_the_setup_once_django_has_loaded(
    shop_env: dict[str, str], settings_module: str
) -> None:
    # Django loads the settings, and with them the app module: setup waits for Django.
    code = (
        "import json, shopsite; "
        "print(json.dumps([sorted(shopsite.app.tasks), shopsite.app.default_queue]))"
    )
    env = {**os.environ, **shop_env, "DJANGO_SETTINGS_MODULE": settings_module}
    done = run([sys.executable, "manage.py", "shell", "-c", code], env)
    assert done.returncode == 0, done.stderr
    tasks = SHOP_TASKS if settings_module == SETTINGS else ["orders.tasks.process_order"]
    assert json.loads(done.stdout.splitlines()[-1]) == [tasks, shop_env["SHOP_QUEUE"]]


def test_manage_py_names_a_broken_tasks_module(shop_env: dict[str, str]) -> None:
    env = {**os.environ, **shop_env, "DJANGO_SETTINGS_MODULE": "broken_settings"}
    done = run([sys.executable, "manage.py", "check"], env)
    assert done.returncode == 1
    assert "TaskDiscoveryError: autodiscover_tasks: brokenapp.tasks failed to import" in (
        done.stderr
    )


def test_without_the_django_app_installed_setup_says_so(shop: Celeriac) -> None:
    from django.conf import settings

    installed = [name for name in settings.INSTALLED_APPS if name != "celeriac.contrib.django"]
    with (
        override_settings(INSTALLED_APPS=installed),
        pytest.raises(SettingsError, match=r"add 'celeriac\.contrib\.django' to INSTALLED_APPS"),
    ):
        setup(Celeriac("no-app-config", set_as_current=False))


def test_a_worker_with_a_broken_tasks_module_exits_naming_it(shop_env: dict[str, str]) -> None:
    env = {**os.environ, **shop_env, "DJANGO_SETTINGS_MODULE": "broken_settings"}
    argv = [sys.executable, "-m", "celeriac", "worker", "-A", "shopsite", "--health-port", "0"]
    done = run(argv, env)
    assert done.returncode == 2, done.stderr
    assert "brokenapp.tasks failed to import" in done.stderr
    assert "no_such_module_for_celeriac_tests" in done.stderr


def test_setup_without_settings_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = "import celeriac, celeriac.contrib.django as d; d.setup(celeriac.Celeriac('x'))"
    done = run_python(code, env)
    assert done.returncode == 1
    assert "SettingsError: DJANGO_SETTINGS_MODULE is not set" in done.stderr
