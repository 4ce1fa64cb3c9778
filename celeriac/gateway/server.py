"""``celeriac gateway``: serve the gateway with uvicorn until interrupted."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from celeriac import serving
from celeriac.exceptions import CeleriacError
from celeriac.gateway.app import build
from celeriac.gateway.settings import Settings, SettingsError, settings_from
from celeriac.serving import ListenError

log = logging.getLogger("celeriac.gateway")


async def _serve(settings: Settings) -> int:
    # Long-polls may hold requests up to 60 s: on SIGTERM they get 10 s, then the
    # connections close (their callers read again from another replica).
    return await serving.serve(
        build(settings), settings.host, settings.port, "gateway",
        timeout_keep_alive=30, timeout_graceful_shutdown=10,
    )  # fmt: skip


def main(argv: Sequence[str]) -> int:
    """Run the gateway; its exit status (1 with one sentence when it cannot start)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from(argv)
        return asyncio.run(_serve(settings))
    except (SettingsError, ListenError, CeleriacError, ValueError) as exc:
        print(f"celeriac gateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
