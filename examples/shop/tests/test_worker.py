"""The shop on an in-memory NATS: tasks wait in their queues until the worker runs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celeriac import TaskState
from celeriac.exceptions import TaskRevokedError
from celeriac.testing import MemoryWorker

from shop import services
from shop.tasks import (
    announce,
    app,
    checkout,
    reserve_stock,
    restock_check,
    send_newsletter,
    ship_order,
)

MakeOrder = Callable[..., dict[str, Any]]


def test_every_test_starts_with_empty_queues(shop_worker: MemoryWorker) -> None:
    assert shop_worker.tasks() == []
    assert shop_worker.dead_letters() == []


def test_checkout_waits_in_the_queue_until_a_worker_runs(
    shop_worker: MemoryWorker, make_order: MakeOrder
) -> None:
    result = checkout(make_order())
    assert [task.task for task in shop_worker.tasks("orders")] == [reserve_stock.name]
    assert result.state is TaskState.PENDING
    assert services.gateway.charges == {}
    shop_worker.run_until_idle()
    assert result.get(timeout=5) == 1
    assert len(services.mailer.outbox) == 1


def test_an_orders_only_worker_leaves_the_email_waiting(
    celeriac_memory: Callable[..., MemoryWorker], make_order: MakeOrder
) -> None:
    orders_worker = celeriac_memory(app, queues=["orders"])
    result = checkout(make_order())
    orders_worker.run_until_idle()
    assert len(services.gateway.charges) == 1
    (waiting,) = orders_worker.tasks("emails")
    assert waiting.args[0]["charge_id"].startswith("ch_")
    assert services.mailer.outbox == []
    orders_worker.run_until_idle("emails")
    assert result.get(timeout=5) == 1


def test_a_busy_warehouse_is_tried_again_a_minute_later(shop_worker: MemoryWorker) -> None:
    services.reset(warehouse_busy_for=1)
    result = ship_order.delay("o-9")
    shop_worker.run_until_idle(skip_delays=False)  # runs once, then waits its minute
    assert result.state is TaskState.RETRY
    assert services.warehouse.shipped == []
    shop_worker.run_until_idle()  # the minute skipped
    assert result.get(timeout=5) == "TRACK-o-9"


def test_restock_check_reports_the_low_items(shop_worker: MemoryWorker) -> None:
    result = restock_check(["sku-apple", "sku-pear", "sku-fig"])
    assert len(shop_worker.tasks()) == 3  # the levels first; the report after them
    shop_worker.run_until_idle()
    assert result.get(timeout=5) == ["sku-pear"]


def test_newsletter_goes_to_every_subscriber(shop_worker: MemoryWorker) -> None:
    result = announce("May", ["ada@example.com", "alan@example.com"])
    shop_worker.run_until_idle()
    assert result.get(timeout=5) == [1, 2]
    assert sorted(email.to for email in services.mailer.outbox) == [
        "ada@example.com",
        "alan@example.com",
    ]


def test_a_revoked_newsletter_is_not_sent(shop_worker: MemoryWorker) -> None:
    result = send_newsletter.delay("ada@example.com", "June")
    result.revoke()
    shop_worker.run_until_idle()
    with pytest.raises(TaskRevokedError):
        result.get(timeout=5)
    assert services.mailer.outbox == []
