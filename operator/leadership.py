"""Leader election on a coordination.k8s.io Lease, so one of several replicas acts.

A replica starts kopf only once it holds the Lease, renews it while it runs,
and stops (the process exits and restarts as a standby) if it cannot renew in
time. Standbys keep trying to take the Lease when its holder stops renewing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


def micro_time(timestamp: float) -> str:
    """A Kubernetes MicroTime string."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> float | None:
    """A Lease time (datetime or string) as Unix seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def lease_available(
    holder: str | None, renewed: float | None, duration: float, me: str, now: float
) -> bool:
    """True when ``me`` may take or keep the Lease (free, ours, or expired)."""
    if not holder or holder == me or renewed is None:
        return True
    return now > renewed + duration


@dataclass
class LeaseElector:
    """Takes, renews and releases one Lease on behalf of ``identity``."""

    api: Any
    namespace: str
    name: str
    identity: str
    duration: float = 15.0
    retry: float = 2.0
    lost: bool = False

    def _body(self, now: float, acquired: float, resource_version: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.duration),
                "acquireTime": micro_time(acquired),
                "renewTime": micro_time(now),
            },
        }

    def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease; False when another replica holds it."""
        leases: Any = client.CoordinationV1Api(self.api)
        now = time.time()
        try:
            lease = leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                leases.create_namespaced_lease(self.namespace, self._body(now, now, None))
            except ApiException as create_exc:
                if create_exc.status == 409:  # another replica created it first
                    return False
                raise
            return True
        spec = lease.spec
        holder = spec.holder_identity
        renewed = parse_time(spec.renew_time)
        duration = float(spec.lease_duration_seconds or self.duration)
        if not lease_available(holder, renewed, duration, self.identity, now):
            return False
        acquired = parse_time(spec.acquire_time) if holder == self.identity else None
        body = self._body(now, acquired or now, lease.metadata.resource_version)
        try:
            leases.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # someone else renewed or took it in between
                return False
            raise
        return True

    async def _attempt(self) -> bool:
        try:
            return await asyncio.to_thread(self.try_acquire)
        except Exception as exc:  # API unreachable: count as a failed attempt
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this replica holds the Lease (True) or ``stop`` is set (False)."""
        announced = False
        while not stop.is_set():
            if await self._attempt():
                log.info("lease %s/%s acquired by %s", self.namespace, self.name, self.identity)
                return True
            if not announced:
                log.info("standing by: another replica holds lease %s", self.name)
                announced = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.retry)
        return False

    async def hold(self, stop: asyncio.Event) -> None:
        """Renew until cancelled; set ``stop`` (and ``lost``) if renewal fails for too long."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.duration / 3)
            if await self._attempt():
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok > self.duration * 2 / 3:
                log.error("lost lease %s/%s; stopping", self.namespace, self.name)
                self.lost = True
                stop.set()
                return

    async def release(self) -> None:
        """Give the Lease up at once so a standby takes over without waiting."""

        def call() -> None:
            leases: Any = client.CoordinationV1Api(self.api)
            lease = leases.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            leases.patch_namespaced_lease(
                self.name, self.namespace, {"spec": {"holderIdentity": None, "renewTime": None}}
            )

        try:
            await asyncio.to_thread(call)
        except Exception as exc:  # best effort: the Lease expires anyway
            log.warning("releasing lease %s: %s", self.name, exc)
