"""``celeriac gateway``: serve the gateway with uvicorn until interrupted."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Sequence

import uvicorn

from celeriac.exceptions import CeleriacError
from celeriac.gateway.app import build
from celeriac.gateway.settings import Settings, SettingsError, settings_from

log = logging.getLogger("celeriac.gateway")


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
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _Server(uvicorn.Server):
    """Says once where it listens (uvicorn is quiet at log level warning)."""

    def __init__(self, config: uvicorn.Config, address: str) -> None:
        super().__init__(config)
        self.address = address

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(f"celeriac gateway on http://{self.address}/", flush=True)


async def _serve(settings: Settings) -> int:
    sock = listen(settings.host, settings.port)
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    # Long-polls may hold requests up to 60 s: on SIGTERM they get 10 s, then the
    # connections close (their callers read again from another replica).
    config = uvicorn.Config(
        build(settings), log_level="warning", access_log=False, server_header=False,
        lifespan="on", timeout_keep_alive=30, timeout_graceful_shutdown=10,
    )  # fmt: skip
    server = _Server(config, f"{host}:{port}")
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1


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
