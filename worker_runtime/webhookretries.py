"""What to do after one attempt to deliver a webhook: a pure policy, tested by table.

2xx is delivered. A redirect stops (it is not followed: it could point anywhere,
past the destination check). 410 Gone stops at once (the receiver says the endpoint is gone
for good), and so does any other 4xx but 408 (timeout), 409 (conflict), 425 (too
early) and 429 (too many requests): sending the same request again would get the
same answer. Everything else (5xx, those four, no answer at all) is tried again
after an exponential backoff with jitter, or after the receiver's ``Retry-After``
on 429 and 503, until the attempts run out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: 4xx answers that may well succeed later.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
#: Answers whose Retry-After header is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 503})
#: The longest wait a Retry-After may ask for; a longer one is cut to this.
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a delivery gets and how long it waits between them."""

    max_attempts: int = 8
    backoff: float = 1.0  # the first wait, doubled after each attempt
    backoff_max: float = 600.0


@dataclass(frozen=True)
class Delivered:
    """The receiver took it."""


@dataclass(frozen=True)
class TryAgain:
    """Attempt again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True)
class Stop:
    """Give up: dead-letter the job with ``why``."""

    why: str


Decision = Delivered | TryAgain | Stop


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (delta seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """The wait after failed attempt ``attempt`` (1-based): exponential, capped, and
    jittered between half and all of it so a receiver coming back is not hit at once."""
    full = min(policy.backoff_max, policy.backoff * 2.0 ** min(attempt - 1, 60))
    return full / 2 + rng.random() * full / 2


@dataclass(frozen=True)
class Attempt:
    """What attempt ``number`` (1-based) of a delivery got: a status, or why there was none."""

    number: int
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, from a Retry-After header


def _settled(status: int | None) -> Decision | None:
    """The decision a status makes whatever the attempt's number; None: retryable."""
    if status is None:
        return None
    if 200 <= status < 300:
        return Delivered()
    if 300 <= status < 400:
        return Stop(f"the receiver answered {status}, a redirect; redirects are not followed")
    if status == 410:
        return Stop("the receiver answered 410 Gone; not tried again")
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return Stop(f"the receiver answered {status}, a client error; not tried again")
    return None


def decide(attempt: Attempt, policy: RetryPolicy, rng: random.Random) -> Decision:
    """What follows ``attempt``: delivered, try again after a delay, or stop."""
    settled = _settled(attempt.status)
    if settled is not None:
        return settled
    status = attempt.status
    what = (
        f"the receiver answered {status}" if status is not None else (attempt.error or "no answer")
    )
    if attempt.number >= policy.max_attempts:
        return Stop(f"{what} on the last of {policy.max_attempts} attempt(s)")
    if status in RETRY_AFTER_STATUSES and attempt.retry_after is not None:
        return TryAgain(min(attempt.retry_after, MAX_RETRY_AFTER))
    return TryAgain(backoff_delay(attempt.number, policy, rng))
