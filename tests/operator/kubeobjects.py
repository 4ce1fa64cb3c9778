"""Reading custom resources and JetStream from the operator's end-to-end tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import nats
from celeriac_devenv.cluster import KubeEnvironment

from tests.support import wait_until

T = TypeVar("T")
APPS = Path(__file__).parent / "apps"


def opscale_pool(name: str, queues: list[str], **spec: Any) -> dict[str, Any]:
    """A WorkerPool running ``apps/opscale_tasks.py`` in local worker processes."""
    return {
        "apiVersion": "celeriac.io/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "queues": queues,
            "app": "opscale_tasks:app",
            "image": "celeriac-e2e:local",
            "terminationGracePeriodSeconds": 10,
            "env": [{"name": "PYTHONPATH", "value": str(APPS)}],
            **spec,
        },
    }


def wait(check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """Poll the API server at most four times a second."""
    return wait_until(check, timeout=timeout, what=what, interval=0.25)


def get(kube: KubeEnvironment, namespace: str, *what: str) -> Any:
    proc = kube.kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    return json.loads(proc.stdout)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


async def _js_call(url: str, fn: Callable[[Any], Any]) -> Any:
    nc = await nats.connect(url)
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.close()


def js_call(kube: KubeEnvironment, fn: Callable[[Any], Any]) -> Any:
    return asyncio.run(_js_call(str(kube.nats_url), fn))
