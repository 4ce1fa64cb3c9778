"""WorkerPools and their scaling decisions, when a Kubernetes API is reachable.

Only when the ``kubernetes`` package is importable and a configuration loads (in
the cluster, or ``$KUBECONFIG`` / ``~/.kube/config``); otherwise the page says the
section is not connected. Needs RBAC to get and list ``workerpools.celeriac.io``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any

from pydantic import ValidationError

from celeriac.protocol.resources import GROUP, VERSION, WorkerPoolStatus

PLURAL = "workerpools"
REQUEST_TIMEOUT = 5.0


def pool_row(item: dict[str, Any]) -> dict[str, Any]:
    """One WorkerPool object as the page shows it."""
    meta = item.get("metadata") or {}
    try:
        status = WorkerPoolStatus.model_validate(item.get("status") or {})
    except ValidationError:
        status = WorkerPoolStatus()
    return {
        "namespace": meta.get("namespace"), "name": meta.get("name"),
        "backlog": status.backlog, "in_flight": status.in_flight,
        "desired": status.desired_replicas, "ready": status.ready_replicas,
        "replicas": status.replicas, "last_scale_reason": status.last_scale_reason,
        "last_scale_time": status.last_scale_time,
    }  # fmt: skip


class Pools:
    """Reads WorkerPools through one API client, made when the configuration loads."""

    def __init__(self) -> None:
        self._api: Any = None
        self.why_not: str | None = None
        self._load()

    def _load(self) -> None:
        if importlib.util.find_spec("kubernetes") is None:
            self.why_not = "the kubernetes package is not installed"
            return
        from kubernetes import client
        from kubernetes import config as _config

        config: Any = _config  # its helpers are untyped
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            try:
                # Read now: the client reads $KUBECONFIG once, when first imported.
                kubeconfig = os.environ.get("KUBECONFIG") or "~/.kube/config"
                config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            except (config.ConfigException, OSError, TypeError, ValueError):
                self.why_not = (
                    "no Kubernetes configuration found (in a pod, $KUBECONFIG or ~/.kube/config)"
                )
                return
        self._api = client.CustomObjectsApi(client.ApiClient(configuration))

    def _list(self) -> list[dict[str, Any]]:
        found = self._api.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, _request_timeout=REQUEST_TIMEOUT
        )
        return [pool_row(item) for item in found.get("items", [])]

    async def read(self) -> dict[str, Any]:
        """``{"connected": True, "pools": [...]}``, else ``connected`` False and why."""
        if self._api is None:
            return {"connected": False, "why": self.why_not, "pools": []}
        try:
            pools = await asyncio.to_thread(self._list)
        except Exception as exc:  # any API failure is a sentence on the page
            status = getattr(exc, "status", None)
            reason = getattr(exc, "reason", None) or type(exc).__name__
            why = f"the Kubernetes API answered {status} {reason}" if status else (
                f"the Kubernetes API is not reachable ({reason})")  # fmt: skip
            return {"connected": False, "why": why, "pools": []}
        pools.sort(key=lambda p: (p["namespace"] or "", p["name"] or ""))
        return {"connected": True, "why": None, "pools": pools}
