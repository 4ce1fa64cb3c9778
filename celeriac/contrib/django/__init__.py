"""Celeriac in a Django project: settings, task discovery, submitting on commit.

Add ``"celeriac.contrib.django"`` to INSTALLED_APPS, and in the project's app module
(``proj/celeriac.py``, imported by ``proj/__init__.py``)::

    import os

    import celeriac.contrib.django
    from celeriac import Celeriac

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    app = Celeriac("proj")
    celeriac.contrib.django.setup(app)

Then ``celeriac worker -A proj`` runs the tasks of every installed app, and views
submit with ``task.delay_on_commit(...)``. See docs/django.md.
"""

from celeriac.contrib.django.configuring import SettingsError, conf_settings
from celeriac.contrib.django.discovery import TaskDiscoveryError, autodiscover_tasks
from celeriac.contrib.django.installing import setup
from celeriac.contrib.django.task import DjangoTask

__all__ = [
    "DjangoTask",
    "SettingsError",
    "TaskDiscoveryError",
    "autodiscover_tasks",
    "conf_settings",
    "setup",
]
