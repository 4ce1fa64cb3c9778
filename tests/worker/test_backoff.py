"""Table tests of the retry policy: delays, caps, jitter bounds and when to give up."""

from __future__ import annotations

import random

import pytest

from celeriac.worker_runtime.backoff import GiveUp, RetryPlan, RetryPolicy, plan_retry, retry_delay


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


POLICY = RetryPolicy(max_retries=3, backoff=1.0, backoff_max=600.0, jitter=False)


@pytest.mark.parametrize(
    ("retries", "policy", "countdown", "expected"),
    [
        (0, POLICY, None, RetryPlan(1.0)),
        (2, POLICY, None, RetryPlan(4.0)),
        (3, POLICY, None, GiveUp()),
        (7, POLICY, None, GiveUp()),
        (0, POLICY, 12.5, RetryPlan(12.5)),  # self.retry(countdown=...) wins over backoff
        (3, POLICY, 12.5, GiveUp()),  # ...but not over max_retries
        (0, POLICY, -3.0, RetryPlan(0.0)),
        (0, RetryPolicy(0, 1.0, 600.0, False), None, GiveUp()),
        (50, RetryPolicy(None, 1.0, 8.0, False), None, RetryPlan(8.0)),  # retry forever
    ],
)
def test_plan_retry(
    retries: int, policy: RetryPolicy, countdown: float | None, expected: object
) -> None:
    assert plan_retry(retries, policy, countdown, Fixed(0.5)) == expected
