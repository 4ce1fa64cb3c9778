"""Serving an ASGI app with uvicorn: the dashboard's and the gateway's common ground.

The socket is bound before uvicorn starts, so a busy or invalid address is one
sentence, not a logged traceback; the server says once where it listens, since
uvicorn is quiet at log level warning.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn


class ListenError(OSError):
    """The address cannot be listened on; the message says which and why."""


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A socket listening on ``host:port`` (0: a free port)."""
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
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _Announcing(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, line: str) -> None:
        super().__init__(config)
        self.line = line

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(self.line, flush=True)


async def serve(app: Any, host: str, port: int, name: str, **config: Any) -> int:
    """Serve ``app`` on ``host:port`` until SIGINT/SIGTERM, printing
    ``celeriac <name> on http://HOST:PORT/`` once listening; 0, or 1 if it never started.

    ``config``: more ``uvicorn.Config`` settings (timeouts).
    """
    sock = listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    options: dict[str, Any] = {
        "log_level": "warning", "access_log": False, "server_header": False, "lifespan": "on",
        **config,
    }  # fmt: skip
    line = f"celeriac {name} on http://{shown}:{sock.getsockname()[1]}/"
    server = _Announcing(uvicorn.Config(app, **options), line)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1
