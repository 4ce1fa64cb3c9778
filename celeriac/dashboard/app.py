"""The dashboard's routes: the page, its static files and the JSON API under ``/api/``.

One NATS connection (a Celeriac app that declares nothing) serves every request;
while NATS is down each API call answers 503 with one sentence, which the page
shows as a banner, and the connection comes back by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from celeriac import __version__
from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.dashboard import api
from celeriac.dashboard.auth import AuthMiddleware
from celeriac.dashboard.kube import Pools
from celeriac.dashboard.recent import TaskFilter
from celeriac.dashboard.settings import Settings
from celeriac.exceptions import CeleriacError
from celeriac.inspection import UnknownQueueError
from celeriac.protocol.names import display_url
from celeriac.protocol.states import TaskState

log = logging.getLogger("celeriac.dashboard")
STATIC = Path(str(files("celeriac.dashboard") / "static"))
REQUEST_TIMEOUT = 10.0  # every API call answers within this, NATS up or not
CONNECT_TIMEOUT = 5.0
MAX_TASKS = 200
# The page builds its DOM from data with textContent; this keeps any injected markup
# inert even so: scripts and styles only from here, no frames, no plugins.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]  # fmt: skip


class UnavailableError(Exception):
    """NATS cannot be reached right now; the message is the banner's sentence."""


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, sending if scope["type"] == "http" else send)


class Backend:
    """The one NATS connection and the Kubernetes reader shared by every request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celeriac = Celeriac(
            "celeriac-dashboard", settings.nats_url, declare_queues=False,
            connect_timeout=CONNECT_TIMEOUT, set_as_current=False,
        )  # fmt: skip
        self.pools: Pools | None = None

    async def broker(self) -> Broker:
        """The connected broker; :class:`UnavailableError` while NATS cannot be reached."""
        try:
            broker = await self.celeriac.broker()
        except CeleriacError as exc:
            raise UnavailableError(f"{exc}; retrying") from None
        if not broker.connection.connected:
            raise UnavailableError(
                f"lost the connection to NATS at {broker.connection.url}; reconnecting"
            )
        return broker

    async def js(self) -> JetStreamContext:
        """JetStream on the shared connection."""
        return (await self.broker()).js


def _sentence(exc: BaseException) -> str:
    from celeriac.cli import _sentence as sentence

    return sentence(exc)


async def _answer(work: Callable[[], Awaitable[Any]]) -> Response:
    """Run ``work`` within the time limit; any failure is one sentence and a status."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return JSONResponse(await work())
    except api.NothingStoredError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    except (UnknownQueueError, ValueError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except UnavailableError as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)
    except TimeoutError:
        return JSONResponse(
            {"error": "NATS did not answer in time; is it up and is JetStream enabled?"},
            status_code=503,
        )
    except Exception as exc:  # an outage or a bug: a sentence, and the server keeps going
        log.warning("dashboard request failed: %s", _sentence(exc))
        return JSONResponse({"error": _sentence(exc)}, status_code=503)


def _when(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid {name} {value[:40]!r}: use an ISO 8601 time") from None


def _number(value: str | None, name: str, default: int | None) -> int | None:
    if not value:
        return default
    if not value.isdigit():
        raise ValueError(f"invalid {name} {value[:40]!r}: use a whole number")
    return int(value)


def task_filter(query: Any) -> TaskFilter:
    """The filter of ``/api/tasks``'s query string (``state``, ``task``, ``since``, ``until``)."""
    state = (query.get("state") or "").upper()
    if state and state not in TaskState.__members__:
        raise ValueError(f"unknown state {state[:40]!r}: use one of {', '.join(TaskState)}")
    since, until = _when(query.get("since"), "since"), _when(query.get("until"), "until")
    for moment in (since, until):
        if moment is not None and moment.tzinfo is None:
            raise ValueError("times need a time zone, e.g. 2025-01-01T12:00:00Z")
    return TaskFilter(
        state=TaskState(state) if state else None,
        task=(query.get("task") or "").strip() or None,
        since=since,
        until=until,
    )


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ValueError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


def _guard(settings: Settings, request: Request) -> Response | None:
    """Refuse a change when read-only, or when not sent as JSON (a form on another site
    cannot send that without the browser asking first)."""
    if settings.read_only:
        return JSONResponse({"error": "the dashboard is read-only"}, status_code=403)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        return JSONResponse({"error": "send the request as application/json"}, status_code=415)
    return None


class Routes:
    """The handlers, sharing the settings and the backend."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend

    async def _js(self, read: Callable[[JetStreamContext], Awaitable[Any]]) -> Any:
        return await read(await self.backend.js())

    async def healthz(self, _: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def index(self, _: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    async def config(self, _: Request) -> Response:
        return JSONResponse({
            "read_only": self.settings.read_only, "version": __version__,
            "nats_url": display_url(self.settings.nats_url or "nats://localhost:4222"),
        })  # fmt: skip

    async def queues(self, _: Request) -> Response:
        return await _answer(lambda: self._js(api.queues))

    async def workers(self, _: Request) -> Response:
        return await _answer(lambda: self._js(api.workers))

    async def tasks(self, request: Request) -> Response:
        async def read() -> Any:
            q = request.query_params
            where = task_filter(q)
            limit = min(MAX_TASKS, _number(q.get("limit"), "limit", 50) or 50)
            before = _number(q.get("before"), "before", None)
            return await api.tasks(await self.backend.js(), where, before=before, limit=limit)

        return await _answer(read)

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        return await _answer(lambda: self._js(lambda js: api.task(js, task_id)))

    async def dead_letters(self, request: Request) -> Response:
        queue = request.query_params.get("queue") or None
        return await _answer(lambda: self._js(lambda js: api.dead_letters(js, queue)))

    async def pools(self, _: Request) -> Response:
        if self.backend.pools is None:
            return JSONResponse({"connected": False, "why": "starting", "pools": []})
        return await _answer(self.backend.pools.read)

    async def _change(
        self, request: Request, work: Callable[[dict[str, Any]], Awaitable[Any]]
    ) -> Response:
        refused = _guard(self.settings, request)
        if refused is not None:
            return refused

        async def go() -> Any:
            return await work(await _body(request))

        return await _answer(go)

    async def revoke(self, request: Request) -> Response:
        async def go(body: dict[str, Any]) -> Any:
            reason = str(body.get("reason") or "revoked from the dashboard")[:500]
            broker = await self.backend.broker()
            return await api.revoke(broker.revocations, request.path_params["task_id"], reason)

        return await self._change(request, go)

    async def replay(self, request: Request) -> Response:
        async def go(body: dict[str, Any]) -> Any:
            ref = str(body.get("ref") or "")
            if not ref:
                raise ValueError('say which dead letter to replay: {"ref": "<queue>:<seq>"}')
            return await api.replay(await self.backend.js(), ref)

        return await self._change(request, go)

    async def purge(self, request: Request) -> Response:
        async def go(body: dict[str, Any]) -> Any:
            queue = str(body.get("queue") or "")
            if not queue:
                raise ValueError('say which queue\'s dead letters to purge: {"queue": "..."}')
            return await api.purge_dead_letters(await self.backend.js(), queue)

        return await self._change(request, go)


def build(settings: Settings) -> Starlette:
    """The dashboard as an ASGI app."""
    backend = Backend(settings)
    r = Routes(settings, backend)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        backend.pools = await asyncio.to_thread(Pools)
        try:
            yield
        finally:
            await backend.celeriac.aclose()

    routes = [
        Route("/healthz", r.healthz),
        Route("/", r.index),
        Route("/api/config", r.config),
        Route("/api/queues", r.queues),
        Route("/api/workers", r.workers),
        Route("/api/tasks", r.tasks),
        Route("/api/tasks/{task_id}", r.task),
        Route("/api/tasks/{task_id}/revoke", r.revoke, methods=["POST"]),
        Route("/api/dead-letters", r.dead_letters),
        Route("/api/dead-letters/replay", r.replay, methods=["POST"]),
        Route("/api/dead-letters/purge", r.purge, methods=["POST"]),
        Route("/api/pools", r.pools),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(AuthMiddleware, credentials=settings.credentials),
        ],
    )
