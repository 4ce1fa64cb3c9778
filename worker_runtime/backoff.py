"""Retry policy: how long a failed task waits, and whether it retries at all.

Pure functions, so the policy is table-tested without a server; the worker feeds
them the delivery count and the task's options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class UniformSource(Protocol):
    """Anything with ``uniform(a, b)``, such as :class:`random.Random`."""

    def uniform(self, a: float, b: float) -> float: ...


def retry_delay(retries: int, base: float, cap: float, jitter: bool, rng: UniformSource) -> float:
    """Seconds to wait before retry number ``retries + 1``.

    Exponential (``base * 2**retries``) capped at ``cap``; with ``jitter`` the
    delay is drawn uniformly from ``[0, that]`` ("full jitter"), which spreads a
    burst of failures so they do not retry in lockstep.
    """
    if base <= 0 or cap <= 0:
        return 0.0
    # Cap the exponent first: 2**retries overflows a float for huge retry counts.
    exponent = min(max(retries, 0), 64)
    ceiling = min(cap, base * (2.0**exponent))
    if not jitter:
        return ceiling
    return min(ceiling, max(0.0, rng.uniform(0.0, ceiling)))


@dataclass(frozen=True)
class RetryPolicy:
    """A task's retry options, as resolved from the task and the message."""

    max_retries: int | None
    backoff: float
    backoff_max: float
    jitter: bool


@dataclass(frozen=True)
class RetryPlan:
    """Retry after ``delay`` seconds; this will be retry number ``retries + 1``."""

    delay: float


@dataclass(frozen=True)
class GiveUp:
    """No retries left: the task fails for good and is dead-lettered."""


def plan_retry(
    retries: int,
    policy: RetryPolicy,
    countdown: float | None,
    rng: UniformSource,
) -> RetryPlan | GiveUp:
    """Decide what follows a failed attempt.

    ``retries`` is how many attempts failed before this one; ``countdown`` is an
    explicit delay asked for by ``self.retry(countdown=...)`` and wins over the
    backoff. ``max_retries=None`` retries forever.
    """
    if policy.max_retries is not None and retries >= policy.max_retries:
        return GiveUp()
    if countdown is not None:
        return RetryPlan(delay=max(0.0, countdown))
    return RetryPlan(
        delay=retry_delay(retries, policy.backoff, policy.backoff_max, policy.jitter, rng)
    )
