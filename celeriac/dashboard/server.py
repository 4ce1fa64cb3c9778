"""``celeriac dashboard``: serve the dashboard with uvicorn until interrupted."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Sequence

import uvicorn

from celeriac.dashboard.app import build
from celeriac.dashboard.settings import Settings, SettingsError, settings_from
from celeriac.exceptions import CeleriacError

log = logging.getLogger("celeriac.dashboard")


class ListenError(OSError):
    """The address cannot be listened on; the message says which and why."""


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (0: a free port), bound before uvicorn starts
    so a busy address is one sentence, not a logged error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn says nothing once listening at log level warning: this says it, once."""

    def __init__(self, config: uvicorn.Config, address: str) -> None:
        super().__init__(config)
        self.address = address

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(f"celeriac dashboard on http://{self.address}/", flush=True)


async def _serve(settings: Settings) -> int:
    sock = listen(settings.host, settings.port)
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config = uvicorn.Config(
        build(settings), log_level="warning", access_log=False, server_header=False,
        lifespan="on",
    )  # fmt: skip
    server = _Server(config, f"{host}:{port}")
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1


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
