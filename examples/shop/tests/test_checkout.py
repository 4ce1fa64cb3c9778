"""Checkout in eager mode: each submit runs the tasks right away, as a worker would."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from celeriac import TaskError, TaskState
from celeriac.testing import MemoryWorker

from shop import services
from shop.errors import OutOfStockError, PaymentDeclinedError
from shop.tasks import charge_card, checkout, reserve_stock

MakeOrder = Callable[..., dict[str, Any]]


def test_checkout_reserves_charges_and_confirms(
    eager_shop: MemoryWorker, make_order: MakeOrder
) -> None:
    result = checkout(make_order(sku_apple=2, sku_fig=1))
    assert result.get(timeout=5) == 1  # the confirmation is the first email sent
    assert services.inventory.level("sku-apple") == 8
    assert list(services.gateway.charges.values()) == [2 * 120 + 310]
    (email,) = services.mailer.outbox
    assert email.subject == "Order o-1 confirmed"
    assert "5.50 EUR" in email.body


def test_a_gateway_timeout_is_retried_and_charges_once(
    eager_shop: MemoryWorker, make_order: MakeOrder
) -> None:
    result = checkout(make_order(card="tok_flaky"))
    assert result.get(timeout=5) == 1
    assert services.gateway.attempts == {"o-1": 3}  # two timeouts, then charged
    assert len(services.gateway.charges) == 1
    assert eager_shop.count("retried", charge_card.name) == 2


def test_a_declined_card_is_not_retried_and_sends_nothing(
    eager_shop: MemoryWorker, make_order: MakeOrder
) -> None:
    result = checkout(make_order(card="tok_declined"))
    with pytest.raises(PaymentDeclinedError, match="card declined"):
        result.get(timeout=5)
    assert services.gateway.attempts == {"o-1": 1}
    assert services.mailer.outbox == []


def test_a_gateway_that_stays_down_ends_in_the_dead_letter_queue(
    eager_shop: MemoryWorker, make_order: MakeOrder
) -> None:
    charged = charge_card.delay(make_order(card="tok_down"))
    assert charged.state is TaskState.FAILURE
    assert services.gateway.attempts == {"o-1": 4}  # the first attempt and 3 retries
    (letter,) = eager_shop.dead_letters("orders")
    assert (letter.task, letter.reason.value, letter.deliveries) == (
        charge_card.name,
        "max_retries",
        4,
    )


def test_out_of_stock_stops_the_checkout_before_the_charge(
    eager_shop: MemoryWorker, make_order: MakeOrder
) -> None:
    result = checkout(make_order(sku_pear=3))
    with pytest.raises(OutOfStockError, match="sku-pear: 3 asked, 2 left"):
        result.get(timeout=5)
    assert services.gateway.attempts == {}
    assert services.inventory.level("sku-pear") == 2
    # Every shop error is a TaskError too, for code that handles any failed task.
    with pytest.raises(TaskError):
        result.get(timeout=5)


def test_an_order_json_cannot_carry_is_refused_at_submit(
    eager_shop: MemoryWorker, make_order: MakeOrder
) -> None:
    bad = {**make_order(), "discount": Decimal("0.10")}
    with pytest.raises(TypeError, match="not JSON-serializable"):
        reserve_stock.delay(bad)
    assert eager_shop.tasks() == []
    assert services.inventory.level("sku-apple") == 10
