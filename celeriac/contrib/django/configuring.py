"""Reading a Django project's ``settings.CELERIAC`` into its app's ``app.conf``.

The setting is a dict. Its keys are ``app.conf`` settings (Celery's names:
``broker_url``, ``task_default_queue``, ``result_expires``, ...) or the names of the
same things as ``Celeriac()`` arguments (``nats_url``, ``default_queue``,
``result_ttl``, ``connect_timeout``), whichever a project prefers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core import exceptions as django_exceptions

from celeriac import exceptions
from celeriac.config import check_setting

#: ``Celeriac()`` argument names and the ``app.conf`` setting each one stands for.
ARGUMENT_NAMES = {
    "nats_url": "broker_url",
    "default_queue": "task_default_queue",
    "result_ttl": "result_expires",
    "connect_timeout": "broker_connection_timeout",
}


# Django ships no type information, so mypy sees its exception as Any.
class SettingsError(django_exceptions.ImproperlyConfigured, exceptions.ImproperlyConfigured):  # type: ignore[misc]
    """``settings.CELERIAC`` is malformed; the message names the setting and the key.

    Both Django's and Celeriac's ``ImproperlyConfigured`` catch it.
    """


def conf_settings(value: object, setting: str = "CELERIAC") -> dict[str, Any]:
    """The ``app.conf`` settings ``value`` (the setting's value) holds, by conf name,
    each one checked as ``app.conf`` checks it.

    Raises ``SettingsError`` naming the setting and the key for anything but a dict,
    an unknown or unsupported key, a bad value, or one setting given under two names.
    """
    if not isinstance(value, Mapping):
        raise SettingsError(
            f"settings.{setting} must be a dict of Celeriac settings, not {type(value).__name__}"
        )
    found: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise SettingsError(f"settings.{setting}: keys are setting names, not {key!r}")
        if key != key.lower():
            raise SettingsError(
                f"settings.{setting}[{key!r}]: keys are lower-case setting names without "
                f"a prefix: {_suggested(key)!r}"
            )
        try:
            name, checked = check_setting(ARGUMENT_NAMES.get(key, key), item)
        except exceptions.ImproperlyConfigured as exc:
            raise SettingsError(f"settings.{setting}[{key!r}]: {exc}") from None
        if name in found:
            raise SettingsError(
                f"settings.{setting}: {given_as[name]!r} and {key!r} are the same setting; give one"
            )
        found[name], given_as[name] = checked, key
    return found


def _suggested(key: str) -> str:
    """What an upper-case key, maybe with Celery's prefix, is called here."""
    lower = key.lower()
    for prefix in ("celery_", "celeriac_"):
        lower = lower.removeprefix(prefix)
    return lower
