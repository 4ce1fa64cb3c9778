"""The ``celeriac.contrib.django`` entry of INSTALLED_APPS.

Django imports the project's app module while it loads the settings or the installed
apps, before either can be used; once it has imported them all, ``ready()`` applies
the settings and discovers the tasks of every app ``setup`` was given.
"""

from __future__ import annotations

from django.apps import AppConfig

from celeriac.contrib.django.installing import finish


class CeleriacConfig(AppConfig):  # type: ignore[misc]  # Django ships no type information
    """Celeriac's Django app: no models, only the end of ``setup``."""

    name = "celeriac.contrib.django"
    label = "celeriac"
    verbose_name = "Celeriac"

    def ready(self) -> None:
        finish()
