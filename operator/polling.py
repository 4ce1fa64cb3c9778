"""The loop of a per-object kopf daemon: poll, sleep, until the object or the operator goes.

A daemon sleeps between polls and costs nothing meanwhile, where a kopf timer is
a full handler call on every tick. A failed Kubernetes call is logged and the
loop goes on: the next poll tries again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException


async def poll_until_stopped(
    stopped: kopf.DaemonStopped,
    logger: Any,
    what: str,
    poll: Callable[[], Awaitable[float]],
    *,
    retry_after: float,
) -> None:
    """Call ``poll`` (it returns the seconds until the next poll) until ``stopped``."""
    while not stopped:
        try:
            delay = await poll()
        except ApiException as exc:
            logger.warning(f"{what} failed: {exc.status} {exc.reason}")
            delay = retry_after
        await stopped.wait(delay)
