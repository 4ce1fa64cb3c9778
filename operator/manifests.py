"""Builds the worker Deployment of a WorkerPool (pure: dicts in, dicts out).

Everything the pool's pods look like is decided here, so it is table-tested
without a cluster and the reconciler only sends what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celeriac.logformat import DEFAULT_LOG_FORMAT, LOG_FORMAT_ENV
from celeriac.natsauth import AUTH_DIR_ENV
from celeriac.protocol.podfields import quantity_text
from celeriac.protocol.resources import API_VERSION, EnvVar, WorkerPoolSpec
from celeriac.protocol.signing import ENV_KEYS_FILE
from celeriac.protocol.workers import WORKER_NAME_ENV

POOL_LABEL = "celeriac.io/pool"
MANAGED_BY = "celeriac-operator"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
HEALTH_PORT = 8080
CONTAINER_NAME = "worker"
TMP_VOLUME = "tmp"
CREDS_VOLUME = "nats-creds"
CREDS_DIR = "/etc/celeriac/nats"
SIGNING_VOLUME = "signing-keys"
SIGNING_DIR = "/etc/celeriac/signing"
SIGNING_FILE = f"{SIGNING_DIR}/keys"
# A numeric non-root user, so runAsNonRoot holds for images whose USER is a name or root.
DEFAULT_UID = 10001


@dataclass(frozen=True)
class PoolRef:
    """The identity of a WorkerPool object."""

    name: str
    namespace: str
    uid: str


def deployment_name(pool: str) -> str:
    """The name of the Deployment running the pool's workers."""
    return f"{pool}-workers"


def selector_labels(pool: str) -> dict[str, str]:
    """Labels that select the pool's pods (immutable once the Deployment exists)."""
    return {POOL_LABEL: pool}


def selector_string(pool: str) -> str:
    """The pod selector as text, for the scale subresource's labelSelectorPath."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(pool).items())


def pool_labels(pool: str) -> dict[str, str]:
    """Labels of the Deployment and its pods."""
    return {
        **selector_labels(pool),
        "app.kubernetes.io/name": "celeriac-worker",
        "app.kubernetes.io/instance": pool,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/part-of": "celeriac",
        MANAGED_BY_LABEL: MANAGED_BY,
    }


def owner_reference(pool: PoolRef) -> dict[str, Any]:
    """Makes the Deployment the pool's: deleted with it, and watched as its child."""
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkerPool",
        "name": pool.name,
        "uid": pool.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


# Of the pod's grace period, what the worker keeps for NAKing what is still running
# and exiting before the kubelet's SIGKILL.
DRAIN_MARGIN = 5


def drain_timeout(grace_seconds: int) -> float:
    """How long a stopping worker lets tasks finish: the grace period minus a margin
    (never below a second, so even a short grace period drains what it can)."""
    return float(max(1, grace_seconds - DRAIN_MARGIN))


def worker_command(spec: WorkerPoolSpec) -> list[str]:
    """``celeriac worker`` with the pool's app, queues, concurrency, pool kind, drain and
    whether it publishes task events."""
    return [
        "celeriac", "worker",
        "-A", spec.app,
        "-Q", ",".join(spec.queues),
        "-c", str(spec.concurrency),
        "--pool", spec.pool,
        "--drain-timeout", f"{drain_timeout(spec.termination_grace_period_seconds):g}",
        *(["--events"] if spec.events else []),
    ]  # fmt: skip


def _env_var(var: EnvVar) -> dict[str, Any]:
    return var.model_dump(by_alias=True, exclude_none=True)


def worker_env(
    spec: WorkerPoolSpec, nats_url: str, log_format: str = DEFAULT_LOG_FORMAT
) -> list[dict[str, Any]]:
    """Celeriac's variables, then the user's (a user variable of the same name wins).

    The workers log in the operator's ``log_format``; the default (text) is left
    unset, so pods of a text-logging operator keep their template as it was.
    """
    ours: dict[str, dict[str, Any]] = {
        "CELERIAC_NATS_URL": {"name": "CELERIAC_NATS_URL", "value": nats_url},
        # The operator owns the queues: workers must not declare them with defaults.
        "CELERIAC_DECLARE_QUEUES": {"name": "CELERIAC_DECLARE_QUEUES", "value": "0"},
        "CELERIAC_HEALTH_PORT": {"name": "CELERIAC_HEALTH_PORT", "value": str(HEALTH_PORT)},
        # Workers name themselves after their pod: in logs and in the workers bucket.
        WORKER_NAME_ENV: {
            "name": WORKER_NAME_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        },
    }
    if log_format != DEFAULT_LOG_FORMAT:
        ours[LOG_FORMAT_ENV] = {"name": LOG_FORMAT_ENV, "value": log_format}
    if spec.nats and spec.nats.credentials_secret:
        ours[AUTH_DIR_ENV] = {"name": AUTH_DIR_ENV, "value": CREDS_DIR}
    if spec.signing_keys_secret is not None:
        ours[ENV_KEYS_FILE] = {"name": ENV_KEYS_FILE, "value": SIGNING_FILE}
    user = [_env_var(v) for v in spec.env]
    user_names = {v["name"] for v in user}
    return [v for v in ours.values() if v["name"] not in user_names] + user


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": HEALTH_PORT},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def worker_container(
    spec: WorkerPoolSpec, nats_url: str, log_format: str = DEFAULT_LOG_FORMAT
) -> dict[str, Any]:
    """The worker container: command, env, probes, port and a locked-down context."""
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "command": worker_command(spec),
        "env": worker_env(spec, nats_url, log_format),
        "ports": [{"name": "metrics", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        "livenessProbe": _probe("/healthz", period=10, failures=3),
        "readinessProbe": _probe("/readyz", period=5, failures=2),
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    if spec.env_from:
        container["envFrom"] = [dict(e) for e in spec.env_from]
    if spec.resources:
        container["resources"] = {
            kind: {name: quantity_text(amount) for name, amount in amounts.items()}
            for kind, amounts in spec.resources.model_dump(by_alias=True).items()
        }
    if spec.nats and spec.nats.credentials_secret:
        container["volumeMounts"].append(
            {"name": CREDS_VOLUME, "mountPath": CREDS_DIR, "readOnly": True}
        )
    if spec.signing_keys_secret is not None:
        container["volumeMounts"].append(
            {"name": SIGNING_VOLUME, "mountPath": SIGNING_DIR, "readOnly": True}
        )
    return container


def _volumes(spec: WorkerPoolSpec) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [{"name": TMP_VOLUME, "emptyDir": {}}]
    if spec.nats and spec.nats.credentials_secret:
        volumes.append(
            {"name": CREDS_VOLUME, "secret": {"secretName": spec.nats.credentials_secret}}
        )
    if spec.signing_keys_secret is not None:
        secret = spec.signing_keys_secret
        # Only the one key, at a fixed path: the Secret's other keys stay out of the pod.
        items = [{"key": secret.key, "path": "keys"}]
        volumes.append(
            {"name": SIGNING_VOLUME, "secret": {"secretName": secret.name, "items": items}}
        )
    return volumes


def _pod_security(spec: WorkerPoolSpec) -> dict[str, Any]:
    if spec.security_context is not None:
        return dict(spec.security_context)
    return {
        "runAsNonRoot": True,
        "runAsUser": DEFAULT_UID,
        "runAsGroup": DEFAULT_UID,
        "fsGroup": DEFAULT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_template(
    pool: PoolRef, spec: WorkerPoolSpec, nats_url: str, log_format: str = DEFAULT_LOG_FORMAT
) -> dict[str, Any]:
    """The pod template; any change to it rolls the Deployment."""
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(HEALTH_PORT),
        "prometheus.io/path": "/metrics",
        **spec.pod_annotations,
    }
    pod_spec: dict[str, Any] = {
        "containers": [worker_container(spec, nats_url, log_format)],
        "terminationGracePeriodSeconds": spec.termination_grace_period_seconds,
        "securityContext": _pod_security(spec),
        "volumes": _volumes(spec),
    }
    optional = {
        "serviceAccountName": spec.service_account_name,
        "nodeSelector": dict(spec.node_selector) or None,
        "tolerations": [dict(t) for t in spec.tolerations] or None,
        "affinity": dict(spec.affinity) if spec.affinity else None,
    }
    pod_spec.update({k: v for k, v in optional.items() if v is not None})
    return {
        "metadata": {
            "labels": {**spec.pod_labels, **pool_labels(pool.name)},
            "annotations": annotations,
        },
        "spec": pod_spec,
    }


def worker_deployment(
    pool: PoolRef,
    spec: WorkerPoolSpec,
    *,
    nats_url: str,
    replicas: int,
    log_format: str = DEFAULT_LOG_FORMAT,
) -> dict[str, Any]:
    """The complete Deployment for ``pool`` running ``replicas`` workers."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(pool.name),
            "namespace": pool.namespace,
            "labels": pool_labels(pool.name),
            "ownerReferences": [owner_reference(pool)],
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(pool.name)},
            # Start a new worker before stopping an old one, so capacity never dips.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": pod_template(pool, spec, nats_url, log_format),
        },
    }
