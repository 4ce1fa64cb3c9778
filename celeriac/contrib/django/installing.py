"""``setup(app)``: one call in a Django project's app module wires Celeriac to Django.

A worker imports the app module before anything has set Django up, and the tasks it
must register import models, so ``setup`` sets Django up when nobody has yet. Any
other process (``manage.py``, WSGI, ASGI, a test runner) sets Django up itself and
imports the module along the way, while it loads the settings (``proj/__init__.py``
imports it) or the installed apps: then nothing can be read yet, and the
``celeriac.contrib.django`` app config finishes the job once Django has imported the
installed apps (``finish``).
"""

from __future__ import annotations

import inspect
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import django
import django.conf
from django.apps import apps
from django.conf import settings

from celeriac.contrib.django.configuring import SettingsError, conf_settings
from celeriac.contrib.django.discovery import autodiscover_tasks
from celeriac.contrib.django.task import DjangoTask
from celeriac.exceptions import ImproperlyConfigured
from celeriac.task import Task

if TYPE_CHECKING:
    from celeriac.app import Celeriac

SETTINGS_MODULE = "DJANGO_SETTINGS_MODULE"
#: The INSTALLED_APPS entry of this integration.
APP_NAME = "celeriac.contrib.django"


@dataclass(frozen=True)
class _Setup:
    """A ``setup`` call whose settings and discovery are still to be done."""

    app: Celeriac
    setting: str
    autodiscover: bool


_lock = threading.Lock()
_pending: list[_Setup] = []


def setup(app: Celeriac, *, setting: str = "CELERIAC", autodiscover: bool = True) -> Celeriac:
    """Wire ``app`` to the Django project and return it.

    - Makes ``DjangoTask`` the app's task class (unless it already derives from it), so
      tasks have ``delay_on_commit`` and ``apply_async_on_commit``.
    - Sets Django up (``django.setup()``) unless it is, or is being, set up already.
    - Applies ``settings.CELERIAC`` (``setting`` names another) to ``app.conf``; a
      missing setting changes nothing.
    - With ``autodiscover``, imports the ``tasks`` module of every installed app.

    The last two happen at once when Django is set up, else once it has loaded the
    installed apps, which must include ``"celeriac.contrib.django"``.
    """
    if not settings.configured and not os.environ.get(SETTINGS_MODULE):
        raise SettingsError(
            f"{SETTINGS_MODULE} is not set: set it (os.environ.setdefault("
            f"{SETTINGS_MODULE!r}, 'proj.settings')) before celeriac.contrib.django.setup(app)"
        )
    _install_task_class(app)
    item = _Setup(app, setting, autodiscover)
    # Models loaded: Django is set up, or running the ready() methods of its apps.
    if apps.models_ready:
        _complete([item])
        return app
    with _lock:
        _pending.append(item)
    if not (apps.loading or _loading_settings()):
        # Nobody is setting Django up: a worker, or a script. The app config's ready()
        # finishes; finish() again says what is missing if it is not installed.
        django.setup()
        finish()
    return app


def finish() -> None:
    """Apply the settings and discover the tasks of every app ``setup`` left pending.

    Called by the ``celeriac.contrib.django`` app config once Django has imported the
    installed apps. Raises ``SettingsError`` when that app is not installed.
    """
    with _lock:
        todo = list(_pending)
        _pending.clear()
    _complete(todo)


def _complete(items: list[_Setup]) -> None:
    if not apps.is_installed(APP_NAME):
        raise SettingsError(
            f"add {APP_NAME!r} to INSTALLED_APPS: it applies settings.CELERIAC and "
            "discovers tasks once Django has loaded"
        )
    for item in items:
        conf = conf_settings(getattr(settings, item.setting, {}), item.setting)
        try:
            item.app.conf.update(conf)
        except ImproperlyConfigured as exc:  # a change the app refuses now (after connecting)
            raise SettingsError(f"settings.{item.setting}: {exc}") from exc
        if item.autodiscover:
            autodiscover_tasks(item.app)


def _install_task_class(app: Celeriac) -> None:
    if issubclass(app.task_cls, DjangoTask):
        return
    if app.task_cls is not Task:
        raise SettingsError(
            f"app.task_cls {app.task_cls.__qualname__} does not derive from DjangoTask; "
            "derive it from celeriac.contrib.django.DjangoTask"
        )
    app.task_cls = DjangoTask


def _loading_settings() -> bool:
    """Whether Django is importing the settings module on this thread right now (the
    module, or its package, imports the app module): they cannot be read yet."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code is _SETTINGS_INIT:
            return True
        frame = frame.f_back
    return False


# Where Django imports the settings module (django.conf.Settings.__init__).
_SETTINGS_INIT = django.conf.Settings.__init__.__code__
