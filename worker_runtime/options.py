"""The worker's command line, parsed into one immutable value.

``celeriac worker`` and ``python -m celeriac.worker_runtime`` share this parser, so
both accept exactly the same arguments. The flags are Celery's where Celery has
one (``-A -Q -c -P -n -l``); a Celery worker option with no equivalent here fails
with a sentence saying what to do instead (:data:`CELERY_ONLY`).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from celeriac.logformat import LOG_FORMAT_ENV, LOG_FORMATS, log_format_default
from celeriac.protocol.names import check_queue_name
from celeriac.protocol.workers import WORKER_NAME_ENV

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
    # -n: the worker's name, %h/%n/%d already replaced (None: $CELERIAC_WORKER_NAME or host-pid).
    hostname: str | None = None


class OptionsError(ValueError):
    """The command line is wrong; the message says how."""


_NO_SUPERVISOR = (
    "the worker runs in the foreground and logs to stderr: run it under a supervisor "
    "(a WorkerPool in Kubernetes, systemd, ...)"
)
_NO_PREFETCH = "a worker never holds more messages than -c, so there is nothing to tune"
_BEAT = (
    "there is no beat process: nats-server fires periodic tasks; define them with "
    "@app.periodic_task and run `celeriac schedule sync` (or apply a TaskSchedule)"
)
_NO_GOSSIP = "Celeriac workers do not talk to each other: drop the option"
# Celery worker options that Celeriac does not have: flag -> what to do instead.
CELERY_ONLY: dict[str, str] = {
    "-B": _BEAT,
    "--beat": _BEAT,
    "-s": _BEAT,
    "--schedule-filename": _BEAT,
    "--scheduler": _BEAT,
    "-E": "task events are --events here",
    "--task-events": "task events are --events here",
    "--autoscale": "-c is fixed per worker; scale the number of workers with a WorkerPool "
    "(its autoscaling follows the queue's backlog)",
    "--prefetch-multiplier": _NO_PREFETCH,
    "-O": _NO_PREFETCH,
    "--without-gossip": _NO_GOSSIP,
    "--without-mingle": _NO_GOSSIP,
    "--without-heartbeat": "workers announce themselves in the celeriac_workers bucket; "
    "drop the option",
    "-S": "revocations are stored on the NATS server, not in a state file: drop the option",
    "--statedb": "revocations are stored on the NATS server, not in a state file: drop the option",
    "-X": "name the queues to consume with -Q",
    "--exclude-queues": "name the queues to consume with -Q",
    "--purge": "run `celeriac purge QUEUE` first",
    "--discard": "run `celeriac purge QUEUE` first",
    "--time-limit": "set time_limit on the task: @app.task(time_limit=...)",
    "--soft-time-limit": "set soft_time_limit on the task: @app.task(soft_time_limit=...)",
    "--max-memory-per-child": "use --max-tasks-per-child, or a memory limit on the container",
    "-I": "import those modules from the app module",
    "--include": "import those modules from the app module",
    "-b": "the NATS URL comes from the app (nats_url=...) or $CELERIAC_NATS_URL",
    "--broker": "the NATS URL comes from the app (nats_url=...) or $CELERIAC_NATS_URL",
    "-D": _NO_SUPERVISOR,
    "--detach": _NO_SUPERVISOR,
    "-f": _NO_SUPERVISOR,
    "--logfile": _NO_SUPERVISOR,
    "--pidfile": _NO_SUPERVISOR,
    "--uid": _NO_SUPERVISOR,
    "--gid": _NO_SUPERVISOR,
    "--umask": _NO_SUPERVISOR,
    "--executable": _NO_SUPERVISOR,
}
# Celery pools with no Celeriac pool of that name: name -> what to use instead.
_OTHER_POOLS = {
    "prefork": "processes",  # the same model: child processes; accepted as a synonym
    "gevent": "write the I/O-bound tasks as async def and use -P asyncio (or -P threads)",
    "eventlet": "write the I/O-bound tasks as async def and use -P asyncio (or -P threads)",
    "solo": "use -P threads -c 1",
    "custom": "use -P asyncio, threads or processes",
}


def celery_only(argv: Sequence[str]) -> OptionsError | None:
    """The error for the first Celery worker option in ``argv`` that Celeriac lacks."""
    for arg in argv:
        if arg == "--":
            break
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
        elif arg.startswith("-") and len(arg) >= 2:
            flag = arg[:2]  # -B, or -Ofair with its value attached
        else:
            continue
        advice = CELERY_ONLY.get(flag)
        if advice is not None:
            return OptionsError(f"{flag} is a Celery option Celeriac does not have: {advice}")
    return None


def pool_kind(text: str) -> PoolKind:
    """A ``-P`` value: asyncio, threads or processes (Celery's ``prefork`` is processes)."""
    value = text.strip().lower()
    if value == "prefork":
        return PoolKind.PROCESSES
    try:
        return PoolKind(value)
    except ValueError:
        pass
    choices = ", ".join(k.value for k in PoolKind)
    advice = _OTHER_POOLS.get(value)
    hint = f"; {value} is a Celery pool: {advice}" if advice else ""
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {choices}){hint}")


_PLACEHOLDER = re.compile(r"%(.?)")


def expand_hostname(template: str, host: str) -> str:
    """``-n``: Celery's ``%h`` (the host name), ``%n`` (its first label), ``%d`` (the
    rest, the domain) and ``%%`` replaced; any other ``%`` sequence is an error."""
    name, _, domain = host.partition(".")
    values = {"h": host, "n": name, "d": domain, "%": "%"}

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            shown = f"%{key}" if key else "a lone %"
            raise OptionsError(
                f"-n/--hostname {template!r}: {shown} is not supported; use %h (host name), "
                "%n (its first part), %d (its domain) or %% (a percent sign)"
            )
        return values[key]

    expanded = _PLACEHOLDER.sub(replace, template).strip()
    if not expanded:
        raise OptionsError(f"-n/--hostname {template!r} gives an empty worker name")
    return expanded


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


def _loglevel(text: str) -> str:
    level = text.strip().upper()
    return "CRITICAL" if level == "FATAL" else level  # Celery accepts FATAL too


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
        "-P", "--pool", type=pool_kind, default=PoolKind.ASYNCIO,
        metavar="asyncio|threads|processes",
        help="where tasks run (default: asyncio; Celery's prefork is processes)",
    )  # fmt: skip
    parser.add_argument(
        "-n", "--hostname", default=None, metavar="NAME",
        help="the worker's name; %%h is the host name, %%n its first part, %%d its domain "
        f"(default: ${WORKER_NAME_ENV}, else <host>-<pid>)",
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
        "-l", "--loglevel", default="INFO", type=_loglevel,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log level (default: INFO)",
    )  # fmt: skip
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default=None, type=str.lower,
        help=f"log lines as text or json, one object a line (default: ${LOG_FORMAT_ENV} or text)",
    )  # fmt: skip
    return parser


def parse_options(argv: Sequence[str], env: Mapping[str, str] | None = None) -> WorkerOptions:
    """Parse ``argv``; argparse exits with status 2 and a usage message on bad input,
    and ``OptionsError`` says what is wrong with a Celery-only option or a bad value."""
    environ = os.environ if env is None else env
    refused = celery_only(argv)
    if refused is not None:
        raise refused
    ns = build_parser().parse_args(list(argv))
    pool: PoolKind = ns.pool
    if ns.max_tasks_per_child is not None and pool is not PoolKind.PROCESSES:
        raise OptionsError("--max-tasks-per-child only applies to --pool processes")
    concurrency = ns.concurrency or _DEFAULT_CONCURRENCY.get(pool) or (os.cpu_count() or 1)
    hostname = None if ns.hostname is None else expand_hostname(ns.hostname, socket.gethostname())
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
        hostname=hostname,
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
