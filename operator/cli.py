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
from celeriac.natsauth import NatsAuth
from celeriac.operator import handlers
from celeriac.operator.config import (
    BUCKET_REPLICAS_ENV,
    NATS_AUTH_DIR_ENV,
    NATS_CREDS_ENV,
    NATS_URL_ENV,
    WORKER_NATS_URL_ENV,
    OperatorConfig,
)
from celeriac.operator.kube import api_client
from celeriac.operator.leadership import LeaseElector
from celeriac.protocol.names import display_url

log = logging.getLogger("celeriac.operator")


def _replicas(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 5:
        raise argparse.ArgumentTypeError(f"must be 1 to 5, not {value}")
    return value


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
        help="port of GET /healthz (0: off; default 8081)",
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
    return parser  # fmt: skip


class Liveness:
    """GET /healthz answers 200 while the event loop runs; says leader or standby."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.role = "standby"
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text=f"ok {self.role}\n")

    async def start(self) -> None:
        """Listen on all interfaces (kubelet probes come from outside the pod)."""
        if not self.port:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
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
                memo=kopf.Memo(config=config),
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
    args = build_parser().parse_args(list(argv))
    kopf.configure(verbose=args.verbose, debug=args.debug)
    if args.kubeconfig is not None:
        # kopf's own login reads $KUBECONFIG; point it at the same file.
        os.environ["KUBECONFIG"] = str(args.kubeconfig)
    try:
        config = OperatorConfig(
            nats_url=args.nats_url,
            nats_auth=_nats_auth(args.nats_auth_dir, args.nats_creds),
            worker_nats_url=args.worker_nats_url,
            kubeconfig=args.kubeconfig,
            bucket_replicas=args.bucket_replicas,
        )
    except CeleriacError as exc:
        log.error("%s", exc)
        return 2
    log.info("handlers: %s", ", ".join(m.__name__ for m in handlers.HANDLER_MODULES))
    log.info("NATS at %s with %s", display_url(args.nats_url), config.nats_auth.summary())
    return asyncio.run(run(args, config))
