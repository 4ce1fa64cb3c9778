"""Retry policy: whether a failed attempt runs again, how many times, and after how long.

Celery's rules: a failure retries only when the task asked for it, by
``self.retry()`` (or ``raise Retry``) or by raising an exception listed in
``autoretry_for`` (and not in ``dont_autoretry_for``); ``max_retries`` caps both.
Time limits retry only when ``autoretry_for`` names them: a broad ``Exception``
must not turn a runaway task into several. Pure functions, so the policy is
table-tested without a server; the worker feeds them the retry count, the task's
options and what the attempt asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from celeriac.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celeriac.protocol.envelope import MAX_RETRIES

_TIME_LIMITS = (TimeLimitExceeded, SoftTimeLimitExceeded)


class UniformSource(Protocol):
    """Anything with ``uniform(a, b)``, such as :class:`random.Random`."""

    def uniform(self, a: float, b: float) -> float: ...


class RetryOptions(Protocol):
    """The options of a registered task the policy reads (``celeriac.task.Task``)."""

    max_retries: int | None
    retry_kwargs: Mapping[str, Any]
    default_retry_delay: float
    retry_backoff: bool | float
    retry_backoff_max: float
    retry_jitter: bool


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


def backoff_base(retry_backoff: bool | float) -> float:
    """``retry_backoff`` in seconds: False is none (0), True is 1 s, a number is itself."""
    if isinstance(retry_backoff, bool):
        return 1.0 if retry_backoff else 0.0
    return float(retry_backoff)


def autoretries(
    exc_type: type[BaseException],
    autoretry_for: tuple[type[BaseException], ...],
    dont_autoretry_for: tuple[type[BaseException], ...] = (),
) -> bool:
    """Whether an exception of ``exc_type`` retries the task by itself."""
    if issubclass(exc_type, dont_autoretry_for):
        return False
    if issubclass(exc_type, _TIME_LIMITS):
        # Only when named: (Exception,) does not retry a task stopped for running too long.
        return any(
            issubclass(exc_type, listed) for listed in autoretry_for if listed in _TIME_LIMITS
        )
    return issubclass(exc_type, autoretry_for)


@dataclass(frozen=True)
class Failure:
    """What a failed attempt asked for."""

    # self.retry() or raise Retry, with its countdown and max_retries (None: not given).
    requested: bool = False
    # An exception autoretry_for retries (and dont_autoretry_for does not stop).
    autoretry: bool = False
    countdown: float | None = None
    max_retries: int | None = None


@dataclass(frozen=True)
class RetryPlan:
    """Retry after ``delay`` seconds; this will be retry number ``retries + 1``."""

    delay: float


@dataclass(frozen=True)
class GiveUp:
    """The task fails for good and is dead-lettered.

    ``exhausted``: a retry was asked for but none is left (else none was asked for).
    """

    exhausted: bool = False


def _first(*values: int | None) -> int | None:
    return next((value for value in values if value is not None), None)


def _bounded(limit: int | None) -> int:
    # None (Celery's "forever") is still bounded: the protocol counts at most this many.
    return MAX_RETRIES if limit is None else min(limit, MAX_RETRIES)


def retry_limit(task: RetryOptions, message_max: int | None, failure: Failure) -> int:
    """How many retries this failure may have had: ``self.retry(max_retries=)``, else
    the message's (``apply_async(max_retries=)``), else for an automatic retry
    ``retry_kwargs['max_retries']``, else the task's ``max_retries``."""
    if failure.requested:
        return _bounded(_first(failure.max_retries, message_max, task.max_retries))
    return _bounded(_first(message_max, task.retry_kwargs.get("max_retries"), task.max_retries))


def attempts_allowed(task: RetryOptions, message_max: int | None) -> int:
    """The most retries a delivery may count before it runs, whatever the attempts ask
    for short of a larger ``self.retry(max_retries=)``: past it, a delivery is one that
    crashed workers (poison). Redeliveries after a crash count as retries."""
    return max(
        retry_limit(task, message_max, Failure(requested=True)),
        retry_limit(task, message_max, Failure(autoretry=True)),
    )


def plan_retry(
    retries: int,
    task: RetryOptions,
    message_max: int | None,
    failure: Failure,
    rng: UniformSource,
) -> RetryPlan | GiveUp:
    """Decide what follows a failed attempt; ``retries`` attempts failed before it.

    The delay: ``self.retry(countdown=)``; for an automatic retry the exponential
    backoff when ``retry_backoff`` is on, else ``retry_kwargs['countdown']``; else the
    task's ``default_retry_delay``.
    """
    if not (failure.requested or failure.autoretry):
        return GiveUp()
    if retries >= retry_limit(task, message_max, failure):
        return GiveUp(exhausted=True)
    if failure.requested:
        delay = failure.countdown
    elif backoff_base(task.retry_backoff) > 0:
        base = backoff_base(task.retry_backoff)
        delay = retry_delay(retries, base, task.retry_backoff_max, task.retry_jitter, rng)
    else:
        delay = task.retry_kwargs.get("countdown")
    if delay is None:
        delay = task.default_retry_delay
    return RetryPlan(delay=max(0.0, delay))
