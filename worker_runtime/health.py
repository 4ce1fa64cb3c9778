"""HTTP probes and metrics: ``/healthz``, ``/readyz`` and ``/metrics`` for Kubernetes.

Liveness means the event loop still turns and NATS is connected; readiness means
every queue's consumer is bound and the worker is not draining.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

log = logging.getLogger(__name__)

# The loop ticks every second; a probe that finds no tick for this long reports stuck.
_TICK_INTERVAL = 1.0
_MAX_TICK_AGE = 10.0


class Probe(Protocol):
    """What the worker tells the probes."""

    def liveness(self) -> tuple[bool, str]:
        """(alive, reason); alive means NATS is connected (or reconnecting briefly)."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason); ready means consumers are bound and not draining."""
        ...


class MetricsPage(Protocol):
    """What serves /metrics (the worker's metrics, the webhook dispatcher's)."""

    def render(self) -> bytes:
        """The text exposition format."""
        ...


@dataclass
class LoopWatch:
    """Notices an event loop blocked by a task that never awaits."""

    last_tick: float = 0.0

    async def run(self) -> None:
        """Record a tick every second until cancelled."""
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(_TICK_INTERVAL)

    def responsive(self) -> bool:
        """True when the loop ticked recently."""
        return time.monotonic() - self.last_tick < _MAX_TICK_AGE


class HealthServer:
    """The aiohttp server; ``port=0`` means no server at all."""

    def __init__(self, port: int, probe: Probe, metrics: MetricsPage) -> None:
        self.port = port
        self._probe = probe
        self._metrics = metrics
        self._watch = LoopWatch()
        self._ticker: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve; a port already in use is a clear error."""
        self._ticker = asyncio.create_task(self._watch.run(), name="celeriac-loop-watch")
        if self.port == 0:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # All interfaces: the kubelet probes the pod IP.
        site = web.TCPSite(self._runner, "0.0.0.0", self.port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise OSError(f"cannot serve health endpoints on port {self.port}: {exc}") from exc
        log.info("health endpoints on :%d (/healthz /readyz /metrics)", self.port)

    async def stop(self) -> None:
        """Stop serving."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        if not self._watch.responsive():
            return _answer(False, "event loop blocked")
        return _answer(*self._probe.liveness())

    async def _readyz(self, _: web.Request) -> web.Response:
        return _answer(*self._probe.readiness())

    async def _metrics_page(self, _: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), content_type="text/plain", charset="utf-8")


def _answer(ok: bool, reason: str) -> web.Response:
    return web.Response(status=200 if ok else 503, text=f"{'ok' if ok else 'fail'}: {reason}\n")
