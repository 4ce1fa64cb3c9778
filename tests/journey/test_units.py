"""The journey's pure parts: progress rate and lines, the local pool, orders and the summary."""

from __future__ import annotations

import io
from typing import Any

import pytest
import yaml
from celeriac_devenv.journey import (
    EXAMPLES,
    JourneyOptions,
    JourneyReport,
    expected_receipt,
    local_pool,
    make_orders,
    summary,
)
from celeriac_devenv.progress import ProgressDisplay, Snapshot, bar, format_line, rate


def snap(at: float, done: int, desired: int = 1, ready: int = 1) -> Snapshot:
    return Snapshot(at=at, backlog=100 - done, in_flight=4, done=done, total=100,
                    desired=desired, ready=ready)  # fmt: skip


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([], 0.0),
        ([snap(0, 0)], 0.0),
        ([snap(0, 0), snap(1, 10)], 10.0),
        ([snap(0, 0), snap(1, 10), snap(2, 30), snap(3, 60), snap(4, 100)], 30.0),  # last 3 s
        ([snap(0, 50), snap(1, 50)], 0.0),
        ([snap(1, 10), snap(1, 20)], 0.0),  # no time passed
        ([snap(0, 20), snap(1, 10)], 0.0),  # never negative
    ],
)
def test_rate(history: list[Snapshot], expected: float) -> None:
    assert rate(history) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("done", "total", "expected"),
    [(0, 10, "[" + "." * 20 + "]"), (5, 10, "[" + "#" * 10 + "." * 10 + "]"),
     (10, 10, "[" + "#" * 20 + "]"), (0, 0, "[" + "#" * 20 + "]")],
)  # fmt: skip
def test_bar(done: int, total: int, expected: str) -> None:
    assert bar(done, total) == expected


def test_format_line_shows_what_users_want() -> None:
    line = format_line(snap(12.34, 40, desired=4, ready=3), 123.4)
    assert line.startswith("  12.3s done  40/100 | backlog    60 | replicas 4/3 desired/ready")
    assert line.endswith("[########............]")
    for part in ("done  40/100", "backlog    60", "running   4", "replicas 4/3", "123 tasks/s"):
        assert part in line


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_display_redraws_one_line_on_a_terminal() -> None:
    out = FakeTTY()
    display = ProgressDisplay(out, width=lambda: 80)
    display.update(snap(0, 0))
    display.update(snap(1, 10))
    display.finish()
    text = out.getvalue()
    assert all(len(part.split("\x1b")[0]) <= 79 for part in text.split("\r"))
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert display.peak_rate == pytest.approx(10.0)


def test_display_prints_periodic_lines_otherwise() -> None:
    now = [0.0]
    out = io.StringIO()
    display = ProgressDisplay(out, every=2.0, clock=lambda: now[0])
    for t, done, desired in [(0, 0, 0), (0.5, 0, 0), (1.0, 0, 2), (1.5, 5, 2), (2.5, 10, 2)]:
        now[0] = t
        display.update(snap(t, done, desired=desired, ready=desired))
    display.finish()
    lines = out.getvalue().splitlines()
    # The first, a replica change, then the next one due two seconds after it.
    assert [line.split("s ")[0].strip() for line in lines] == ["0.0", "1.0"]
    now[0] = 3.0
    display.update(snap(3.0, 12, desired=2, ready=2))
    assert len(out.getvalue().splitlines()) == 3
    assert "\r" not in out.getvalue()


def _example_pool() -> dict[str, Any]:
    pool: dict[str, Any] = yaml.safe_load((EXAMPLES / "workerpool.yaml").read_text())
    return pool


def test_local_pool_adjusts_only_what_the_local_run_needs() -> None:
    original = _example_pool()
    options = JourneyOptions(min_replicas=1, max_replicas=3, mail_latency=0.2)
    pool, changes = local_pool(original, options)
    assert original == _example_pool()  # not modified in place
    spec = pool["spec"]
    assert spec["app"] == original["spec"]["app"] and spec["queues"] == original["spec"]["queues"]
    assert spec["autoscaling"]["minReplicas"] == 1 and spec["autoscaling"]["maxReplicas"] == 3
    env = {e["name"]: e["value"] for e in spec["env"]}
    assert env["PYTHONPATH"] == str(EXAMPLES / "apps")
    assert env["SHOP_MAIL_LATENCY"] == "0.2"
    assert set(changes) == {"env", "terminationGracePeriodSeconds", "autoscaling"}
    again, _ = local_pool(pool, options)
    assert again == pool  # idempotent: no duplicate variables


def test_example_pool_runs_the_example_tasks() -> None:
    pool = _example_pool()
    module = pool["spec"]["app"].split(":")[0]
    assert (EXAMPLES / "apps" / (module.replace(".", "/") + ".py")).exists()
    queue = yaml.safe_load((EXAMPLES / "taskqueue.yaml").read_text())
    assert pool["spec"]["queues"] == [queue["metadata"]["name"]]


def test_orders_are_reproducible_and_receipts_computed_independently() -> None:
    assert make_orders(50) == make_orders(50)
    order = (
        3,
        "a@example.com",
        [{"price_cents": 250, "quantity": 2}, {"price_cents": 5, "quantity": 1}],
    )
    assert expected_receipt(order) == {
        "order_id": 3, "to": "a@example.com", "total_cents": 505, "status": "sent",
    }  # fmt: skip


def test_summary() -> None:
    report = JourneyReport(
        tasks=100, succeeded=100, peak_replicas=4, final_replicas=0, drain_seconds=10.0,
        scale_down_seconds=7.5, peak_rate=20.0, scaling_events=["scale up from 0 to 4: work"],
    )  # fmt: skip
    lines = summary(report, JourneyOptions())
    assert lines[0] == "tasks done       100/100 (0 failed, all results correct)"
    assert "10 tasks/s on average, 20 at peak" in lines[1]
    assert "0 -> 4 (peak, max 4) -> 0" in lines[2]
    assert lines[-1] == "  - scale up from 0 to 4: work"
    bad = JourneyReport(tasks=2, succeeded=1, failed=1, wrong=["x: FAILURE"])
    assert "(1 failed, 1 wrong)" in summary(bad, JourneyOptions())[0]
