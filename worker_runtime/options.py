"""The worker's command line, parsed into one immutable value.

``celeriac worker`` and ``python -m celeriac.worker_runtime`` share this parser, so
both accept exactly the same arguments.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from celeriac.logformat import LOG_FORMAT_ENV, LOG_FORMATS, log_format_default
from celeriac.protocol.names import check_queue_name

HEALTH_PORT_ENV = "CELERIAC_HEALTH_PORT"
# Set to 1 (or true, yes, on) to publish task events, like --events.
EVENTS_ENV = "CELERIAC_EVENTS"
DEFAULT_HEALTH_PORT = 8080
# Below Kubernetes' default 30 s termination grace, so the NAKs go out before SIGKILL.
DEFAULT_DRAIN_TIMEOUT = 25.0


class PoolKind(StrEnum):
    """Where task functions run."""

    ASYNCIO = "asyncio"
    THREADS = "threads"
    PROCESSES = "processes"


# Default -c per pool: many coroutines are cheap, threads less so, processes cost a core.
_DEFAULT_CONCURRENCY = {PoolKind.ASYNCIO: 100, PoolKind.THREADS: 10}


@dataclass(frozen=True)
class WorkerOptions:
    """Everything the command line says about one worker."""

    app_spec: str
    # Empty: consume the app's default queue.
    queues: tuple[str, ...]
    concurrency: int
    pool: PoolKind
    max_tasks_per_child: int | None
    health_port: int
    drain_timeout: float
    loglevel: str
    # text or json (one object per line); see celeriac.logformat.
    log_format: str = "text"
    # Publish task events on celeriac.events.<queue>.<type> (off: no cost at all).
    events: bool = False
    # Keys file (see protocol.signing) overriding the app's: check and sign task messages.
    signing_keys_file: str | None = None


class OptionsError(ValueError):
    """The command line is wrong; the message says how."""


def _queue_list(text: str) -> tuple[str, ...]:
    queues = tuple(q.strip() for q in text.split(",") if q.strip())
    if not queues:
        raise argparse.ArgumentTypeError("give at least one queue name")
    try:
        return tuple(check_queue_name(q) for q in queues)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port_number(text: str) -> int:
    """A port flag's value, 0-65535 (0 turns the endpoint off)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535 (0 turns it off), got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``celeriac worker``."""
    parser = argparse.ArgumentParser(
        prog="celeriac worker",
        description="Consume Celeriac queues on NATS JetStream and run their tasks.",
    )
    parser.add_argument(
        "-A", "--app", required=True, dest="app_spec", metavar="MODULE[:APP]",
        help="module defining the tasks; APP names the Celeriac instance (found if omitted)",
    )  # fmt: skip
    parser.add_argument(
        "-Q", "--queues", type=_queue_list, default=(), metavar="Q1,Q2",
        help="comma-separated queues to consume (default: the app's default queue)",
    )  # fmt: skip
    parser.add_argument(
        "-c", "--concurrency", type=_positive_int, default=None, metavar="N",
        help="tasks run at once (default: 100 asyncio, 10 threads, CPU count processes)",
    )  # fmt: skip
    parser.add_argument(
        "--pool", choices=[k.value for k in PoolKind], default=PoolKind.ASYNCIO.value,
        help="where tasks run (default: asyncio)",
    )  # fmt: skip
    parser.add_argument(
        "--max-tasks-per-child", type=_positive_int, default=None, metavar="N",
        help="processes pool: replace a child process after it ran N tasks",
    )  # fmt: skip
    parser.add_argument(
        "--health-port",
        type=port_number,
        default=None,
        metavar="PORT",
        help=f"port of /healthz, /readyz, /metrics (default: ${HEALTH_PORT_ENV} or "
        f"{DEFAULT_HEALTH_PORT}; 0 turns it off)",
    )
    parser.add_argument(
        "--drain-timeout", type=_seconds, default=DEFAULT_DRAIN_TIMEOUT, metavar="SECONDS",
        help="on SIGTERM, how long running tasks may take before the rest is NAKed "
        f"(default: {DEFAULT_DRAIN_TIMEOUT:g})",
    )  # fmt: skip
    parser.add_argument(
        "--events", action="store_true", default=None,
        help=f"publish task events for `celeriac events` (default: ${EVENTS_ENV} or off)",
    )  # fmt: skip
    parser.add_argument(
        "--signing-keys-file", default=None, metavar="PATH",
        help="refuse task messages not signed with one of the keys in PATH, and sign "
        "what the worker publishes (default: $CELERIAC_SIGNING_KEYS or "
        "$CELERIAC_SIGNING_KEYS_FILE, else no checking)",
    )  # fmt: skip
    parser.add_argument(
        "-l", "--loglevel", default="INFO", type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log level (default: INFO)",
    )  # fmt: skip
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default=None, type=str.lower,
        help=f"log lines as text or json, one object a line (default: ${LOG_FORMAT_ENV} or text)",
    )  # fmt: skip
    return parser


def parse_options(argv: Sequence[str], env: Mapping[str, str] | None = None) -> WorkerOptions:
    """Parse ``argv``; argparse exits with status 2 and a usage message on bad input."""
    environ = os.environ if env is None else env
    ns = build_parser().parse_args(list(argv))
    pool = PoolKind(ns.pool)
    if ns.max_tasks_per_child is not None and pool is not PoolKind.PROCESSES:
        raise OptionsError("--max-tasks-per-child only applies to --pool processes")
    concurrency = ns.concurrency or _DEFAULT_CONCURRENCY.get(pool) or (os.cpu_count() or 1)
    return WorkerOptions(
        app_spec=ns.app_spec,
        queues=tuple(dict.fromkeys(ns.queues)),
        concurrency=concurrency,
        pool=pool,
        max_tasks_per_child=ns.max_tasks_per_child,
        health_port=health_port_from(ns.health_port, environ),
        drain_timeout=ns.drain_timeout,
        loglevel=ns.loglevel,
        log_format=ns.log_format or _log_format(environ),
        events=_events(ns.events, environ),
        signing_keys_file=ns.signing_keys_file,
    )


def _events(flag: bool | None, env: Mapping[str, str]) -> bool:
    if flag:
        return True
    raw = env.get(EVENTS_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise OptionsError(f"${EVENTS_ENV}: use 1 or 0, not {raw!r}")


def _log_format(env: Mapping[str, str]) -> str:
    try:
        return log_format_default(env)
    except ValueError as exc:
        raise OptionsError(str(exc)) from None


def health_port_from(flag: int | None, env: Mapping[str, str]) -> int:
    """The health port: the flag, else ``$CELERIAC_HEALTH_PORT``, else the default."""
    if flag is not None:
        return flag
    raw = env.get(HEALTH_PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_HEALTH_PORT
    try:
        return port_number(raw)
    except argparse.ArgumentTypeError as exc:
        raise OptionsError(f"${HEALTH_PORT_ENV}: {exc}") from None
