"""``celeriac dashboard``: serve the dashboard with uvicorn until interrupted."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from celeriac import serving
from celeriac.dashboard.app import build
from celeriac.dashboard.settings import Settings, SettingsError, settings_from
from celeriac.exceptions import CeleriacError
from celeriac.serving import ListenError

log = logging.getLogger("celeriac.dashboard")


async def _serve(settings: Settings) -> int:
    return await serving.serve(build(settings), settings.host, settings.port, "dashboard")


def main(argv: Sequence[str]) -> int:
    """Run the dashboard; its exit status (1 with one sentence when it cannot start)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from(argv)
    except SettingsError as exc:
        print(f"celeriac dashboard: {exc}", file=sys.stderr)
        return 1
    if settings.exposed_without_auth:
        log.warning(
            "no credentials set and listening on %s: anyone who can reach it can see the "
            "queues%s; set CELERIAC_DASHBOARD_TOKEN or CELERIAC_DASHBOARD_USERNAME and "
            "CELERIAC_DASHBOARD_PASSWORD",
            settings.host, "" if settings.read_only else " and replay or purge dead letters",
        )  # fmt: skip
    try:
        return asyncio.run(_serve(settings))
    except (ListenError, CeleriacError, ValueError) as exc:  # e.g. NATS credentials unreadable
        print(f"celeriac dashboard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
