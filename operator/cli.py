"""``celeriac operator``: run the kopf operator behind a Lease, with a liveness endpoint.

Flags fall back to environment variables, so the Helm chart can configure the
operator either way. Exit status: 0 after SIGTERM/SIGINT, 1 when the Lease was
lost (the pod restarts and stands by), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import kopf
from aiohttp import web

from celeriac.exceptions import CeleriacError
from celeriac.logformat import LOG_FORMAT_ENV, LOG_FORMATS
from celeriac.natsauth import NatsAuth
from celeriac.operator import handlers
from celeriac.operator.config import (
    BUCKET_REPLICAS_ENV,
    EVENTS_MAX_AGE_ENV,
    EVENTS_MAX_BYTES_ENV,
    NATS_AUTH_DIR_ENV,
    NATS_CREDS_ENV,
    NATS_URL_ENV,
    WORKER_NATS_URL_ENV,
    OperatorConfig,
    events_max_age,
    parse_size,
)
from celeriac.operator.kube import api_client
from celeriac.operator.leadership import LeaseElector
from celeriac.operator.logs import configure_logging, log_format_from_env
from celeriac.operator.metrics import CONTENT_TYPE, OperatorMetrics
from celeriac.protocol.names import display_url

log = logging.getLogger("celeriac.operator")


def _replicas(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 5:
        raise argparse.ArgumentTypeError(f"must be 1 to 5, not {value}")
    return value


def _age(text: str) -> float:
    try:
        return events_max_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _nats_auth(directory: Path | None, creds: Path | None) -> NatsAuth:
    auth = NatsAuth.from_directory(directory) if directory else NatsAuth()
    return replace(auth, creds_file=str(creds)) if creds else auth


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``celeriac operator``."""
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="celeriac operator",
        description="Reconcile TaskQueue and WorkerPool resources and autoscale worker pools.",
    )
    add = parser.add_argument
    add(
        "--nats-url",
        default=env.get(NATS_URL_ENV) or "nats://127.0.0.1:4222",
        help=f"NATS the operator talks to (default: ${NATS_URL_ENV})",
    )
    add(
        "--nats-creds",
        type=Path,
        default=env.get(NATS_CREDS_ENV) or None,
        help=f"NATS credentials file, e.g. a mounted Secret (default: ${NATS_CREDS_ENV})",
    )
    add(
        "--nats-auth-dir",
        type=Path,
        default=env.get(NATS_AUTH_DIR_ENV) or None,
        help="directory with any of nats.creds, user, password, token, ca.crt, tls.crt, "
        f"tls.key, e.g. a mounted Secret (default: ${NATS_AUTH_DIR_ENV})",
    )
    add(
        "--worker-nats-url",
        default=env.get(WORKER_NATS_URL_ENV) or None,
        help="NATS URL given to worker pods (default: --nats-url)",
    )
    add(
        "--bucket-replicas",
        type=_replicas,
        default=env.get(BUCKET_REPLICAS_ENV) or 1,
        help="replicas of the shared results, revocations and chords buckets, 1-5 "
        f"(default: ${BUCKET_REPLICAS_ENV} or 1); set 3 on a NATS cluster",
    )
    add(
        "--events-max-age",
        type=_age,
        default=env.get(EVENTS_MAX_AGE_ENV) or "1h",
        help="how long the task events stream keeps an event, e.g. 30m, 6h "
        f"(default: ${EVENTS_MAX_AGE_ENV} or 1h)",
    )
    add(
        "--events-max-bytes",
        type=_size,
        default=env.get(EVENTS_MAX_BYTES_ENV) or "256MiB",
        help="size limit of the task events stream, e.g. 64MiB, 1GiB; the oldest events "
        f"go first (default: ${EVENTS_MAX_BYTES_ENV} or 256MiB)",
    )
    add(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig file (default: in-cluster, then $KUBECONFIG)",
    )
    add(
        "-n",
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch this namespace (repeatable; default: all namespaces)",
    )
    add(
        "--liveness-port",
        type=int,
        default=int(env.get("CELERIAC_LIVENESS_PORT", "8081")),
        help="port of GET /healthz and GET /metrics (0: off; default 8081)",
    )
    add("--lease-name", default="celeriac-operator", help="Lease used for leader election")
    add(
        "--lease-namespace",
        default=env.get("POD_NAMESPACE") or "default",
        help="namespace of the Lease (default: $POD_NAMESPACE or default)",
    )
    add(
        "--no-leader-election",
        action="store_true",
        help="act at once without a Lease (only when a single replica runs)",
    )
    add("--verbose", action="store_true", help="log more")
    add("--debug", action="store_true", help="log everything")
    add(
        "--log-format",
        choices=LOG_FORMATS,
        type=str.lower,
        default=None,
        help=f"log lines as text or json, one object a line (default: ${LOG_FORMAT_ENV} or "
        "text); worker pools get the same unless their env sets it",
    )
    return parser  # fmt: skip


class Liveness:
    """GET /healthz answers 200 while the event loop runs; says leader or standby.

    GET /metrics on the same port serves the operator's Prometheus metrics (a
    standby has counted nothing: only the leader reconciles).
    """

    def __init__(self, port: int, metrics: OperatorMetrics | None = None) -> None:
        self.port = port
        self.role = "standby"
        self.metrics = metrics or OperatorMetrics()
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text=f"ok {self.role}\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def start(self) -> None:
        """Listen on all interfaces (kubelet probes come from outside the pod)."""
        if not self.port:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "0.0.0.0", self.port).start()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()


def _identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}-{uuid.uuid4().hex[:8]}"


async def run(args: argparse.Namespace, config: OperatorConfig) -> int:
    """Stand by for the Lease, then run kopf until stopped or the Lease is lost."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    liveness = Liveness(args.liveness_port)
    await liveness.start()
    elector = None
    if not args.no_leader_election:
        api = api_client(config.kubeconfig)
        elector = LeaseElector(api, args.lease_namespace, args.lease_name, _identity())
    try:
        if elector is not None and not await elector.acquire(stop):
            return 0
        liveness.role = "leader"
        holding = asyncio.create_task(elector.hold(stop)) if elector else None
        try:
            await kopf.operator(
                memo=kopf.Memo(config=config, metrics=liveness.metrics),
                standalone=True,
                clusterwide=not args.namespaces,
                namespaces=args.namespaces,
                stop_flag=stop,
            )
        finally:
            if holding is not None:
                holding.cancel()
            if elector is not None and not elector.lost:
                await elector.release()
    finally:
        await liveness.stop()
    return 1 if elector is not None and elector.lost else 0


def main(argv: Sequence[str]) -> int:
    """Entry point of ``celeriac operator``."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    try:
        log_format = args.log_format or log_format_from_env(os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    configure_logging(log_format, verbose=args.verbose, debug=args.debug)
    if args.kubeconfig is not None:
        # kopf's own login reads $KUBECONFIG; point it at the same file.
        os.environ["KUBECONFIG"] = str(args.kubeconfig)
    try:
        config = OperatorConfig(
            nats_url=args.nats_url,
            nats_auth=_nats_auth(args.nats_auth_dir, args.nats_creds),
            worker_nats_url=args.worker_nats_url,
            kubeconfig=args.kubeconfig,
            log_format=log_format,
            bucket_replicas=args.bucket_replicas,
            events_max_age=args.events_max_age,
            events_max_bytes=args.events_max_bytes,
        )
    except CeleriacError as exc:
        log.error("%s", exc)
        return 2
    log.info("handlers: %s", ", ".join(m.__name__ for m in handlers.HANDLER_MODULES))
    log.info("NATS at %s with %s", display_url(args.nats_url), config.nats_auth.summary())
    return asyncio.run(run(args, config))
