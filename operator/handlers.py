"""The operator's kopf entry module: settings, shared clients, and every handler.

``kopf run -m celeriac.operator.handlers`` works on its own (configuration from
the environment); ``celeriac operator`` runs the same handlers behind a Lease.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from celeriac.operator import login, taskqueues, taskschedules, workerpools
from celeriac.operator.config import OperatorConfig
from celeriac.operator.connections import NatsConnections
from celeriac.operator.kube import Deployments, Events, StatusWriter, api_client, api_executor
from celeriac.operator.metrics import OperatorMetrics
from celeriac.protocol.resources import GROUP

# Importing the handler modules registers their handlers with kopf.
HANDLER_MODULES = (login, taskqueues, taskschedules, workerpools)


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings: our own annotation names, and Events only for warnings."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Handler logs become Events only from WARNING; scaling decisions post their own.
    settings.posting.level = logging.WARNING
    # Re-establish watches regularly so a silently dropped connection cannot stall us.
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Apply settings and open the shared NATS and Kubernetes clients."""
    configure(settings)
    config: OperatorConfig = memo.get("config") or OperatorConfig.from_env()
    memo.config = config
    memo.nats = NatsConnections(config.nats_url, config.nats_auth)
    # asyncio.to_thread runs on the loop's default executor: size it for the API calls.
    asyncio.get_running_loop().set_default_executor(api_executor())
    api = api_client(config.kubeconfig)
    memo.deployments = Deployments(api)
    memo.events = Events(api)
    memo.status_writer = StatusWriter(api)
    # `celeriac operator` brings its own (it serves /metrics); `kopf run` counts unseen.
    memo.metrics = memo.get("metrics") or OperatorMetrics()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Close the NATS connections."""
    connections: NatsConnections | None = memo.get("nats")
    if connections is not None:
        await connections.close()
