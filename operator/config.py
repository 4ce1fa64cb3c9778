"""The operator's configuration: command-line flags with environment fallbacks.

``celeriac operator`` parses flags; ``kopf run -m celeriac.operator.handlers``
has no flags of ours, so the same settings also come from the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from celeriac.logformat import DEFAULT_LOG_FORMAT, log_format_default
from celeriac.natsauth import AUTH_DIR_ENV, CREDS_ENV, NO_AUTH, NatsAuth
from celeriac.protocol.jetstream import EVENTS_MAX_AGE_SECONDS, EVENTS_MAX_BYTES, EventsSettings
from celeriac.protocol.kubeschema import parse_duration

NATS_URL_ENV = "CELERIAC_NATS_URL"
NATS_CREDS_ENV = CREDS_ENV
NATS_AUTH_DIR_ENV = AUTH_DIR_ENV
WORKER_NATS_URL_ENV = "CELERIAC_WORKER_NATS_URL"
BUCKET_REPLICAS_ENV = "CELERIAC_BUCKET_REPLICAS"
EVENTS_MAX_AGE_ENV = "CELERIAC_EVENTS_MAX_AGE"
EVENTS_MAX_BYTES_ENV = "CELERIAC_EVENTS_MAX_BYTES"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class OperatorConfig:
    """What the handlers need to know about their surroundings."""

    nats_url: str = DEFAULT_NATS_URL
    # Credentials and TLS files, typically a mounted Secret (celeriac.natsauth).
    nats_auth: NatsAuth = NO_AUTH
    # The URL given to worker pods when it differs from the operator's (other network view).
    worker_nats_url: str | None = None
    kubeconfig: Path | None = None
    # How often TaskQueue status refreshes its backlog numbers, in seconds.
    queue_status_interval: float = 5.0
    # Replicas of the shared results, revocations and chords buckets (JetStream R1-R5).
    bucket_replicas: int = 1
    # The operator's log format (text or json), also given to the worker pods it runs.
    log_format: str = DEFAULT_LOG_FORMAT
    # Limits of the task events stream (seconds, bytes): the oldest events go first.
    events_max_age: float = EVENTS_MAX_AGE_SECONDS
    events_max_bytes: int = EVENTS_MAX_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """The configuration the environment describes."""
        environ = os.environ if env is None else env
        kubeconfig = environ.get("KUBECONFIG")
        return cls(
            nats_url=environ.get(NATS_URL_ENV) or DEFAULT_NATS_URL,
            nats_auth=NatsAuth.from_environment(environ),
            worker_nats_url=environ.get(WORKER_NATS_URL_ENV) or None,
            kubeconfig=Path(kubeconfig) if kubeconfig else None,
            bucket_replicas=int(environ.get(BUCKET_REPLICAS_ENV) or 1),
            log_format=log_format_default(environ),
            events_max_age=events_max_age(environ.get(EVENTS_MAX_AGE_ENV) or "1h"),
            events_max_bytes=parse_size(environ.get(EVENTS_MAX_BYTES_ENV) or "256MiB"),
        )

    def events_settings(self) -> EventsSettings:
        """The events stream's limits, replicated like the shared buckets."""
        return EventsSettings(
            max_age_seconds=self.events_max_age,
            max_bytes=self.events_max_bytes,
            replicas=self.bucket_replicas,
        )

    def nats_url_for_workers(self, pool_url: str | None) -> str:
        """The NATS URL a pool's workers get: the pool's own, else the operator's."""
        return pool_url or self.worker_nats_url or self.nats_url


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
# JetStream refuses a stream smaller than this is worth having for events.
_MIN_EVENTS_BYTES = 1024


def parse_size(text: str) -> int:
    """Bytes in ``text``: ``268435456``, ``256MiB``, ``1GiB``, ``500MB``; ValueError otherwise."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r}: use a number of bytes, e.g. 256MiB or 1GB")
    number, unit = match.groups()
    size = int(float(number) * _SIZE_UNITS[(unit or "B").lower()])
    if size < _MIN_EVENTS_BYTES:
        raise ValueError(f"size {text!r} is too small: at least {_MIN_EVENTS_BYTES} bytes")
    return size


def events_max_age(text: str) -> float:
    """Seconds in a duration such as ``1h`` or ``30m``, more than zero."""
    seconds = parse_duration(text.strip())
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be more than zero")
    return seconds
