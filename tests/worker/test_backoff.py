"""Table tests of the retry policy: which failures retry, how many times, after how long."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from celeriac.exceptions import (
    CeleriacError,
    MaxRetriesExceededError,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from celeriac.protocol.envelope import MAX_RETRIES
from celeriac.worker_runtime.backoff import (
    Failure,
    GiveUp,
    RetryPlan,
    attempts_allowed,
    autoretries,
    backoff_base,
    plan_retry,
    retry_delay,
    retry_limit,
)


class Fixed:
    """A jitter source that returns a fixed fraction of the range."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


@pytest.mark.parametrize(
    ("retries", "base", "cap", "expected"),
    [
        (0, 1.0, 600.0, 1.0),
        (1, 1.0, 600.0, 2.0),
        (2, 1.0, 600.0, 4.0),
        (5, 0.5, 600.0, 16.0),
        (10, 1.0, 600.0, 600.0),  # 1024 capped
        (3, 2.0, 10.0, 10.0),
        (10_000, 1.0, 30.0, 30.0),  # no overflow for huge counts
        (-1, 1.0, 600.0, 1.0),  # negative counts behave like 0
        (4, 0.0, 600.0, 0.0),  # no backoff configured
        (4, 1.0, 0.0, 0.0),
    ],
)
def test_delay_without_jitter(retries: int, base: float, cap: float, expected: float) -> None:
    assert retry_delay(retries, base, cap, False, Fixed(0.5)) == expected


@pytest.mark.parametrize(
    ("retries", "fraction", "expected"),
    [
        (0, 0.0, 0.0),
        (0, 1.0, 1.0),
        (2, 0.5, 2.0),
        (3, 0.25, 2.0),
        (20, 0.5, 300.0),  # half of the 600 s cap
    ],
)
def test_full_jitter_draws_below_the_ceiling(
    retries: int, fraction: float, expected: float
) -> None:
    assert retry_delay(retries, 1.0, 600.0, True, Fixed(fraction)) == pytest.approx(expected)


def test_jitter_stays_in_range_with_a_real_generator() -> None:
    rng = random.Random(7)
    for retries in range(15):
        ceiling = min(60.0, 0.5 * 2**retries)
        for _ in range(50):
            assert 0.0 <= retry_delay(retries, 0.5, 60.0, True, rng) <= ceiling


@pytest.mark.parametrize(
    ("value", "seconds"), [(False, 0.0), (True, 1.0), (0, 0.0), (2, 2.0), (0.25, 0.25)]
)
def test_retry_backoff_reads_as_celery_does(value: bool | float, seconds: float) -> None:
    assert backoff_base(value) == seconds


class AppError(Exception):
    pass


class TransientError(AppError):
    pass


EXC = (Exception,)


@pytest.mark.parametrize(
    ("raised", "autoretry_for", "dont", "expected"),
    [
        (ValueError, (), (), False),  # nothing asked: no automatic retry
        (ValueError, (ValueError,), (), True),
        (ValueError, [ValueError], (), True),
        (ValueError, (KeyError,), (), False),
        (TransientError, (AppError,), (), True),  # subclasses match
        (TransientError, EXC, (AppError,), False),  # dont_autoretry_for wins
        (AppError, EXC, (TransientError,), True),  # ...only for its own classes
        (KeyboardInterrupt, EXC, (), False),  # not an Exception
        (KeyboardInterrupt, (BaseException,), (), True),
        (TimeLimitExceeded, EXC, (), False),  # time limits only when named
        (TimeLimitExceeded, (CeleriacError,), (), False),
        (SoftTimeLimitExceeded, EXC, (), False),
        (TimeLimitExceeded, (TimeLimitExceeded,), (), True),
        (SoftTimeLimitExceeded, (SoftTimeLimitExceeded,), (), True),
        (SoftTimeLimitExceeded, (TimeLimitExceeded,), (), False),
        (TimeLimitExceeded, (TimeLimitExceeded,), (TimeLimitExceeded,), False),
        (MaxRetriesExceededError, EXC, (), True),  # an ordinary error (bounded by max_retries)
    ],
)
def test_which_exceptions_retry_by_themselves(
    raised: type[BaseException],
    autoretry_for: Any,
    dont: tuple[type[BaseException], ...],
    expected: bool,
) -> None:
    assert autoretries(raised, tuple(autoretry_for), dont) is expected


@dataclass
class Options:
    """A task's retry options, defaults as on celeriac.task.Task."""

    max_retries: int | None = 3
    retry_kwargs: dict[str, Any] = field(default_factory=dict)
    default_retry_delay: float = 180.0
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = False


ASKED = Failure(requested=True)
AUTO = Failure(autoretry=True)
BACKOFF = Options(retry_backoff=True)


@pytest.mark.parametrize(
    ("retries", "task", "message_max", "failure", "expected"),
    [
        # Nothing asked for a retry: the first failure is the last, whatever max_retries.
        (0, Options(), None, Failure(), GiveUp()),
        (0, Options(max_retries=10), 10, Failure(), GiveUp()),
        # self.retry(): countdown, else default_retry_delay (180 s, Celery's), never backoff.
        (0, Options(), None, ASKED, RetryPlan(180.0)),
        (2, BACKOFF, None, ASKED, RetryPlan(180.0)),
        (0, Options(), None, Failure(requested=True, countdown=12.5), RetryPlan(12.5)),
        (0, Options(), None, Failure(requested=True, countdown=-3.0), RetryPlan(0.0)),
        (0, Options(default_retry_delay=0.5), None, ASKED, RetryPlan(0.5)),
        (3, Options(), None, ASKED, GiveUp(exhausted=True)),  # max_retries=3 caps it
        (7, Options(), None, ASKED, GiveUp(exhausted=True)),
        (3, Options(), None, Failure(requested=True, max_retries=5), RetryPlan(180.0)),
        (5, Options(), None, Failure(requested=True, max_retries=5), GiveUp(exhausted=True)),
        (1, Options(), 1, ASKED, GiveUp(exhausted=True)),  # apply_async(max_retries=1)
        (1, Options(), 1, Failure(requested=True, max_retries=2), RetryPlan(180.0)),
        # autoretry_for: exponential backoff when on, else retry_kwargs countdown, else default.
        (0, Options(), None, AUTO, RetryPlan(180.0)),
        (0, Options(retry_kwargs={"countdown": 2}), None, AUTO, RetryPlan(2.0)),
        (0, BACKOFF, None, AUTO, RetryPlan(1.0)),
        (2, BACKOFF, None, AUTO, RetryPlan(4.0)),
        (2, Options(retry_backoff=3), None, AUTO, RetryPlan(12.0)),
        (2, Options(retry_backoff=0.1), None, AUTO, RetryPlan(0.4)),
        (2, Options(retry_backoff=True, retry_kwargs={"countdown": 2}), None, AUTO, RetryPlan(4.0)),
        (2, Options(retry_backoff=True, retry_backoff_max=3), None, AUTO, RetryPlan(3.0)),
        (2, Options(retry_backoff=True, retry_jitter=True), None, AUTO, RetryPlan(2.0)),
        (3, BACKOFF, None, AUTO, GiveUp(exhausted=True)),
        (3, Options(retry_kwargs={"max_retries": 5}), None, AUTO, RetryPlan(180.0)),
        (5, Options(retry_kwargs={"max_retries": 5}), None, AUTO, GiveUp(exhausted=True)),
        (2, Options(retry_kwargs={"max_retries": 5}), 2, AUTO, GiveUp(exhausted=True)),
        (0, Options(max_retries=0), None, AUTO, GiveUp(exhausted=True)),
        # max_retries=None (Celery's "forever") is bounded by the protocol's retry count.
        (50, Options(max_retries=None), None, AUTO, RetryPlan(180.0)),
        (MAX_RETRIES, Options(max_retries=None), None, AUTO, GiveUp(exhausted=True)),
        # A retry asked for and an autoretry exception at once: the request decides.
        (0, Options(), None, Failure(requested=True, autoretry=True, countdown=1), RetryPlan(1.0)),
    ],
)
def test_plan_retry(
    retries: int, task: Options, message_max: int | None, failure: Failure, expected: object
) -> None:
    assert plan_retry(retries, task, message_max, failure, Fixed(0.5)) == expected


@pytest.mark.parametrize(
    ("task", "message_max", "failure", "expected"),
    [
        (Options(), None, ASKED, 3),
        (Options(), None, AUTO, 3),
        (Options(), 7, ASKED, 7),
        (Options(), 7, Failure(requested=True, max_retries=2), 2),
        (Options(retry_kwargs={"max_retries": 6}), None, AUTO, 6),
        (Options(retry_kwargs={"max_retries": 6}), None, ASKED, 3),  # retry_kwargs: automatic only
        (Options(retry_kwargs={"max_retries": 6}), 1, AUTO, 1),
        (Options(max_retries=None), None, ASKED, MAX_RETRIES),
    ],
)
def test_retry_limit(
    task: Options, message_max: int | None, failure: Failure, expected: int
) -> None:
    assert retry_limit(task, message_max, failure) == expected


@pytest.mark.parametrize(
    ("task", "message_max", "expected"),
    [
        (Options(), None, 3),  # a crashed worker's task comes back up to 3 times
        (Options(max_retries=0), None, 0),
        (Options(), 5, 5),
        (Options(retry_kwargs={"max_retries": 8}), None, 8),
        (Options(max_retries=9, retry_kwargs={"max_retries": 2}), None, 9),
        (Options(max_retries=None), None, MAX_RETRIES),
    ],
)
def test_attempts_allowed_before_a_delivery_is_poison(
    task: Options, message_max: int | None, expected: int
) -> None:
    assert attempts_allowed(task, message_max) == expected
