"""The few Kubernetes API calls the operator makes besides kopf's own.

The official client is synchronous, so every call runs in a worker thread and
the kopf event loop never blocks. The client object lives in the operator memo.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from kubernetes import client
from kubernetes import config as _config
from kubernetes.client.exceptions import ApiException

from celeriac.protocol.resources import GROUP, VERSION

log = logging.getLogger(__name__)

# The client's config helpers are untyped.
config: Any = _config


# Concurrent API calls (worker threads, and HTTP connections kept for them). The
# default, a few threads, queued reconciles behind each other when hundreds of
# objects arrive at once.
API_CONCURRENCY = 32


def api_client(kubeconfig: Path | None) -> Any:
    """An ApiClient from ``kubeconfig``, $KUBECONFIG/~/.kube/config, or the pod's account."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = API_CONCURRENCY
    return client.ApiClient(configuration)


def api_executor() -> ThreadPoolExecutor:
    """The threads that run the synchronous API calls (``asyncio.to_thread``)."""
    return ThreadPoolExecutor(max_workers=API_CONCURRENCY, thread_name_prefix="kube-api")


def _json(resp: Any) -> dict[str, Any]:
    """The body of a raw response (a call made with ``_preload_content=False``)."""
    result: dict[str, Any] = json.loads(resp.data)
    return result


def _drain(resp: Any) -> None:
    """Read a raw response to its end, which hands its connection back to the pool."""
    _ = resp.data


# Replacing a Deployment that changed since it was read: attempts before giving up.
REPLACE_ATTEMPTS = 5


class DeploymentConflictError(Exception):
    """A Deployment with the pool's Deployment name exists and belongs to something else."""


def _replacing(
    wanted: dict[str, Any], current: dict[str, Any], owner_uid: str, keep_replicas: bool
) -> dict[str, Any]:
    """The body replacing ``current`` with ``wanted``; refused when a WorkerPool other
    than ``owner_uid`` (or nothing of ours) controls ``current``. With ``keep_replicas``
    the replica count stays the one ``current`` has."""
    meta = wanted["metadata"]
    owners = current["metadata"].get("ownerReferences") or []
    if not any(o.get("uid") == owner_uid and o.get("controller") for o in owners):
        raise DeploymentConflictError(
            f"Deployment {meta['name']} already exists and is not controlled by this WorkerPool"
        )
    body = dict(wanted)
    body["metadata"] = {
        **meta,
        "resourceVersion": current["metadata"]["resourceVersion"],
        # Keep what controllers and users annotated (revision, restartedAt, ...).
        "annotations": current["metadata"].get("annotations") or {},
    }
    if keep_replicas:
        body["spec"] = {**wanted["spec"], "replicas": current["spec"].get("replicas") or 0}
    return body


class Deployments:
    """Reads, creates, replaces and scales Deployments."""

    def __init__(self, api: Any) -> None:
        self._apps = client.AppsV1Api(api)

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Deployment as a plain dict, or None when there is none."""

        def call() -> dict[str, Any] | None:
            try:
                # Raw JSON: building the client's model objects and turning them back
                # into a dict was the operator's largest cost with many pools.
                resp = self._apps.read_namespaced_deployment(
                    name, namespace, _preload_content=False
                )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return _json(resp)

        return await asyncio.to_thread(call)

    async def apply(
        self,
        wanted: dict[str, Any],
        current: dict[str, Any] | None,
        owner_uid: str,
        *,
        keep_replicas: bool = False,
    ) -> dict[str, Any]:
        """Create ``wanted``, or replace ``current`` with it (the pod template wholesale).

        The Deployment controller writes its status all the time, so a replace can lose
        the race for ``resourceVersion``: it is read again and retried at once, a few
        times, instead of waiting for kopf's retry a minute later. ``keep_replicas``
        leaves the replica count to whoever scales the Deployment (the autoscaler):
        a replace that lost the race to a scale keeps the new count, not the one read
        before it.
        """
        meta = wanted["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        attempt = 1
        while True:
            if current is None:
                return await asyncio.to_thread(self._create, namespace, wanted)
            body = _replacing(wanted, current, owner_uid, keep_replicas)
            try:
                return await asyncio.to_thread(self._replace, namespace, name, body)
            except ApiException as exc:
                if exc.status != 409 or attempt >= REPLACE_ATTEMPTS:
                    raise
            attempt += 1
            current = await self.read(namespace, name)

    def _create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self._apps.create_namespaced_deployment(
            namespace, cast(Any, body), _preload_content=False
        )
        return _json(resp)

    def _replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self._apps.replace_namespaced_deployment(
            name, namespace, cast(Any, body), _preload_content=False
        )
        return _json(resp)

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set the Deployment's replica count (a merge patch of spec.replicas only)."""
        resp = await asyncio.to_thread(
            self._apps.patch_namespaced_deployment_scale,
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            _preload_content=False,
        )
        _drain(resp)


class StatusWriter:
    """Merge-patches the status of our custom resources, for loops that run outside
    kopf's handler calls (kopf applies handler patches itself)."""

    def __init__(self, api: Any) -> None:
        self._custom = client.CustomObjectsApi(api)

    async def patch(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> bool:
        """Patch ``status`` into the object; False when the object is gone."""

        def call() -> bool:
            try:
                resp = self._custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    name,
                    {"status": dict(status)},
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            _drain(resp)
            return True

        return await asyncio.to_thread(call)


class Events:
    """Posts Kubernetes Events about our objects (best effort: failures are only logged)."""

    def __init__(self, api: Any, component: str = "celeriac-operator") -> None:
        self._core = client.CoreV1Api(api)
        self._component = component

    def event_body(
        self, obj: Mapping[str, Any], reason: str, message: str, type_: str, now: float
    ) -> dict[str, Any]:
        """A core/v1 Event about ``obj``."""
        meta = obj["metadata"]
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }

    async def post(
        self, obj: Mapping[str, Any], reason: str, message: str, type_: str = "Normal"
    ) -> None:
        """Post one Event; ``type_`` is Normal or Warning."""
        body = self.event_body(obj, reason, message, type_, time.time())
        namespace = body["metadata"]["namespace"]
        try:
            resp = await asyncio.to_thread(
                self._core.create_namespaced_event,
                namespace,
                cast(Any, body),
                _preload_content=False,  # the created Event is not needed back
            )
            _drain(resp)
        except ApiException as exc:
            log.warning("could not post event %s on %s: %s", reason, obj["metadata"]["name"], exc)
