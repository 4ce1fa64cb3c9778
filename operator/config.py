"""The operator's configuration: command-line flags with environment fallbacks.

``celeriac operator`` parses flags; ``kopf run -m celeriac.operator.handlers``
has no flags of ours, so the same settings also come from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from celeriac.natsauth import AUTH_DIR_ENV, CREDS_ENV, NO_AUTH, NatsAuth

NATS_URL_ENV = "CELERIAC_NATS_URL"
NATS_CREDS_ENV = CREDS_ENV
NATS_AUTH_DIR_ENV = AUTH_DIR_ENV
WORKER_NATS_URL_ENV = "CELERIAC_WORKER_NATS_URL"
BUCKET_REPLICAS_ENV = "CELERIAC_BUCKET_REPLICAS"
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
        )

    def nats_url_for_workers(self, pool_url: str | None) -> str:
        """The NATS URL a pool's workers get: the pool's own, else the operator's."""
        return pool_url or self.worker_nats_url or self.nats_url
