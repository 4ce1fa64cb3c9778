"""``celeriac webhooks``: deliver completion webhooks (docs/webhooks.md).

Workers publish a job when a task with a ``webhook`` settles; this command POSTs
them. Run one or more next to the workers (they share the work); it holds the
webhook secrets, which workers never need.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from celeriac.app import Celeriac
from celeriac.exceptions import CeleriacError
from celeriac.logformat import LOG_FORMATS, log_format_default
from celeriac.worker_runtime.destinations import AddressRules, IPNetwork, parse_networks
from celeriac.worker_runtime.health import HealthServer
from celeriac.worker_runtime.logs import configure_logging
from celeriac.worker_runtime.options import (
    DEFAULT_HEALTH_PORT,
    HEALTH_PORT_ENV,
    health_port_from,
    port_number,
)
from celeriac.worker_runtime.webhookdispatch import Dispatcher
from celeriac.worker_runtime.webhookmetrics import DispatcherMetrics, DispatcherProbe
from celeriac.worker_runtime.webhookretries import RetryPolicy
from celeriac.worker_runtime.webhooksecrets import SECRETS_FILE_ENV, SecretsFileError, read_secrets

log = logging.getLogger("celeriac.webhooks")

ALLOW_PRIVATE_ENV = "CELERIAC_WEBHOOK_ALLOW_PRIVATE"
ALLOW_CIDRS_ENV = "CELERIAC_WEBHOOK_ALLOW_CIDRS"
_DEFAULTS = RetryPolicy()


@dataclass(frozen=True)
class DispatcherOptions:
    """The command line of ``celeriac webhooks``."""

    secrets_file: str
    rules: AddressRules
    policy: RetryPolicy
    timeout: float
    concurrency: int
    loglevel: str
    log_format: str
    health_port: int = DEFAULT_HEALTH_PORT


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``celeriac webhooks``."""
    parser = argparse.ArgumentParser(
        prog="celeriac webhooks",
        description="Deliver completion webhooks: POST each, signed, with retries.",
    )
    parser.add_argument(
        "--secrets-file", metavar="PATH", default=None,
        help=f"JSON: secret name -> whsec_ secret(s) (default: ${SECRETS_FILE_ENV})",
    )  # fmt: skip
    parser.add_argument(
        "--allow-private", action="store_true", default=None,
        help="allow loopback, private, link-local and other non-public destinations "
        f"(default: ${ALLOW_PRIVATE_ENV} or off)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-cidr", action="append", default=[], metavar="CIDR",
        help=f"allow destinations in this network; repeatable (and ${ALLOW_CIDRS_ENV}, "
        "comma-separated)",
    )  # fmt: skip
    parser.add_argument(
        "--max-attempts", type=_positive(int), default=_DEFAULTS.max_attempts, metavar="N",
        help=f"attempts before a delivery is dead-lettered (default: {_DEFAULTS.max_attempts})",
    )  # fmt: skip
    parser.add_argument(
        "--backoff", type=_positive(float), default=_DEFAULTS.backoff, metavar="SECONDS",
        help=f"the first wait between attempts, doubled each time (default: {_DEFAULTS.backoff:g})",
    )  # fmt: skip
    parser.add_argument(
        "--backoff-max", type=_positive(float), default=_DEFAULTS.backoff_max, metavar="SECONDS",
        help=f"the longest wait between attempts (default: {_DEFAULTS.backoff_max:g})",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=_positive(float), default=10.0, metavar="SECONDS",
        help="how long one attempt may take (default: 10)",
    )  # fmt: skip
    parser.add_argument(
        "-c", "--concurrency", type=_positive(int), default=16, metavar="N",
        help="deliveries under way at once (default: 16)",
    )  # fmt: skip
    parser.add_argument(
        "--health-port", type=port_number, default=None, metavar="PORT",
        help=f"port of /healthz, /readyz, /metrics (default: ${HEALTH_PORT_ENV} or "
        f"{DEFAULT_HEALTH_PORT}; 0 turns it off)",
    )  # fmt: skip
    parser.add_argument(
        "-l", "--loglevel", default="INFO", type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    )  # fmt: skip
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=None, type=str.lower)
    return parser


def parse_options(argv: Sequence[str], env: Mapping[str, str]) -> DispatcherOptions:
    """Parse ``argv``; raises ValueError with a sentence for a wrong value."""
    ns = build_parser().parse_args(list(argv))
    secrets_file = ns.secrets_file or env.get(SECRETS_FILE_ENV)
    if not secrets_file:
        raise ValueError(f"give --secrets-file or set ${SECRETS_FILE_ENV}")
    raw = env.get(ALLOW_PRIVATE_ENV, "").strip().lower()
    if raw not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ValueError(f"${ALLOW_PRIVATE_ENV}: use 1 or 0, not {raw!r}")
    allow_private = bool(ns.allow_private) or raw in ("1", "true", "yes", "on")
    networks: list[IPNetwork] = list(parse_networks(env.get(ALLOW_CIDRS_ENV, "")))
    for text in ns.allow_cidr:
        networks.extend(parse_networks(text))
    health_port = health_port_from(ns.health_port, env)
    if ns.backoff_max < ns.backoff:
        raise ValueError("--backoff-max must not be below --backoff")
    return DispatcherOptions(
        secrets_file=secrets_file,
        rules=AddressRules(allow_private=allow_private, allowed=tuple(networks)),
        policy=RetryPolicy(ns.max_attempts, ns.backoff, ns.backoff_max),
        timeout=ns.timeout,
        concurrency=ns.concurrency,
        loglevel=ns.loglevel,
        log_format=ns.log_format or log_format_default(env),
        health_port=health_port,
    )


def main(argv: list[str]) -> int:
    """Deliver webhooks until SIGTERM or SIGINT; returns the exit code."""
    try:
        options = parse_options(argv, os.environ)
        secrets = read_secrets(options.secrets_file)
    except (ValueError, SecretsFileError) as exc:
        print(f"celeriac webhooks: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(options.loglevel, options.log_format)
    if options.rules.allow_private:
        log.warning("webhooks may go to private and loopback addresses (--allow-private)")
    try:
        return asyncio.run(_serve(options, secrets))
    except (OSError, CeleriacError) as exc:
        log.error("%s", exc)
        return 1


async def _serve(options: DispatcherOptions, secrets: dict[str, tuple[bytes, ...]]) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    app = Celeriac("celeriac-webhooks", declare_queues=True, set_as_current=False)
    metrics = DispatcherMetrics()
    holder: list[Dispatcher] = []

    def connection() -> tuple[bool, bool] | None:
        if not holder:
            return None
        nc = holder[0].broker.nc
        return nc.is_connected, nc.is_reconnecting

    probe = DispatcherProbe(connection, lambda: bool(holder) and holder[0].consuming)
    health = HealthServer(options.health_port, probe, metrics)
    # Serving before NATS answers lets /healthz say "starting" and /readyz say why not.
    await health.start()
    try:
        dispatcher = Dispatcher(
            await app.broker(),
            secrets,
            options.rules,
            options.policy,
            name=f"{socket.gethostname()}-{os.getpid()}",
            timeout=options.timeout,
            concurrency=options.concurrency,
            metrics=metrics,
        )
        holder.append(dispatcher)
        stop_probe = asyncio.create_task(_flag_stopping(stopping, probe))
        try:
            await dispatcher.run(stopping)
        finally:
            stop_probe.cancel()
    finally:
        await health.stop()
        await app.aclose()
    log.info("webhooks dispatcher stopped")
    return 0


async def _flag_stopping(stopping: asyncio.Event, probe: DispatcherProbe) -> None:
    """Turn /readyz off as soon as a signal comes, while the POSTs under way finish."""
    await stopping.wait()
    probe.stopping = True
