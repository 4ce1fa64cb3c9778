"""Finding the Celeriac app a worker serves from ``-A module[:attribute]``.

The app need not be a module global called ``app``: without an attribute name the
module is searched for the one Celeriac instance it holds.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from celeriac.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.app import Celeriac


class AppLoadError(Exception):
    """The app spec does not lead to exactly one Celeriac instance."""


def load_app(spec: str) -> Celeriac:
    """Import ``module`` and return its Celeriac app (``module:attr`` names it)."""

    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise AppLoadError(f"invalid app spec {spec!r}: expected MODULE or MODULE:APP")
    # A worker started from a project folder should find that folder's modules.
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppLoadError(f"cannot import app module {module_name!r}: {exc}") from exc
    except ImproperlyConfigured as exc:  # e.g. a bad setting read while the module loads
        raise AppLoadError(f"app module {module_name!r}: {exc}") from exc
    app = _find_app(module, module_name, attr, spec)
    # Code that finds its app implicitly (AsyncResult(id), shared tasks) finds this one.
    app.set_current()
    return app


def _find_app(module: object, module_name: str, attr: str, spec: str) -> Celeriac:
    from celeriac.app import Celeriac

    if attr:
        obj: object = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
        if callable(obj) and not isinstance(obj, Celeriac):
            obj = obj()  # a factory function returning the app
        if not isinstance(obj, Celeriac):
            raise AppLoadError(f"{spec!r} is a {type(obj).__name__}, not a Celeriac app")
        return obj
    found = {id(v): v for v in vars(module).values() if isinstance(v, Celeriac)}
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise AppLoadError(
            f"module {module_name!r} defines no Celeriac app; name it with {module_name}:APP"
        )
    raise AppLoadError(
        f"module {module_name!r} defines {len(found)} Celeriac apps; choose one with "
        f"{module_name}:APP"
    )
