"""Finding the tasks of a Django project: the ``tasks`` module of every installed app.

Tasks register with an app when their module is imported; a worker has to import
them all before it starts, and in a Django project they sit in ``<app>/tasks.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.apps import apps

if TYPE_CHECKING:
    from celeriac.app import Celeriac

log = logging.getLogger(__name__)


class TaskDiscoveryError(ImportError):
    """A tasks module that exists failed to import (its own error is the cause)."""


def autodiscover_tasks(
    app: Celeriac, packages: Iterable[str] | None = None, related_name: str = "tasks"
) -> list[str]:
    """Import ``<package>.<related_name>`` for every package that has one.

    ``packages`` defaults to the packages of ``INSTALLED_APPS`` (Django must be set
    up). A package without such a module is skipped; a module that exists but fails
    to import raises ``TaskDiscoveryError`` naming it. Returns the modules imported.
    """
    if packages is None:
        # Models are loaded (in ready() methods too): task modules may import them.
        if not apps.models_ready:
            raise TaskDiscoveryError(
                "autodiscover_tasks: Django is not set up yet; call django.setup() first "
                "(celeriac.contrib.django.setup(app) does)"
            )
        packages = [config.name for config in apps.get_app_configs()]
    before = set(app.tasks)
    found = [
        module
        for module in (_import_related(package, related_name) for package in packages)
        if module is not None
    ]
    added = sorted(set(app.tasks) - before)
    log.debug("autodiscover_tasks: imported %s; new tasks on %s: %s", found, app.name, added)
    return found


def _import_related(package: str, related_name: str) -> str | None:
    """Import ``package.related_name`` and return its name; None if there is none."""
    name = f"{package}.{related_name}"
    try:
        parent = importlib.import_module(package)
    except Exception as exc:
        raise TaskDiscoveryError(f"autodiscover_tasks: cannot import {package!r}: {exc}") from exc
    # A single-module app has no submodules to look for.
    if not hasattr(parent, "__path__") or importlib.util.find_spec(name) is None:
        return None
    try:
        importlib.import_module(name)
    except Exception as exc:
        raise TaskDiscoveryError(
            f"autodiscover_tasks: {name} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return name
