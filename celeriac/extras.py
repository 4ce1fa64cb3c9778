"""The optional parts of the distribution, and a clear error when one is missing.

``pip install celeriac`` is the SDK alone. The worker and the operator need more
(``celeriac[worker]``, ``celeriac[operator]``); starting either without its extra
fails at once with the command that installs it, not with a bare ImportError
deep inside.
"""

from __future__ import annotations

import importlib.util

# extra -> the top-level modules it installs (as imported, not as distributed).
EXTRAS: dict[str, tuple[str, ...]] = {
    "worker": ("aiohttp", "prometheus_client"),
    "operator": ("kopf", "kubernetes", "aiohttp", "prometheus_client", "yaml"),
    "cli": ("click", "rich"),
    "dashboard": ("starlette", "uvicorn"),
    "gateway": ("fastapi", "uvicorn", "prometheus_client", "yaml", "standardwebhooks"),
    # Optional at run time: without it, tracing is off (celeriac.tracing).
    "otel": ("opentelemetry",),
}


class MissingExtraError(ImportError):
    """A component was started without the extra that installs its dependencies."""


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require(extra: str, component: str) -> None:
    """Raise MissingExtraError naming ``extra`` if any of its modules is absent."""
    absent = missing(extra)
    if absent:
        raise MissingExtraError(
            f"{component} needs the '{extra}' extra (missing: {', '.join(absent)}); "
            f"install it with: pip install 'celeriac[{extra}]'"
        )
