"""The shop's tasks: checkout (reserve stock, charge the card, confirm by email), shipping,
stock reports and newsletters.

Workers run them with ``celeriac worker -A shop.tasks -Q orders,emails``; the tests in
``tests/`` run them with no NATS at all (``celeriac.testing``).
"""

from __future__ import annotations

from typing import Any

from celeriac import Celeriac, chain, chord, group
from celeriac.async_result import AsyncResult, GroupResult

from shop import services
from shop.errors import GatewayTimeoutError, WarehouseBusyError

app = Celeriac("shop", default_queue="orders")
# get() raises the shop's own errors (``except PaymentDeclinedError:``), not a generic TaskError.
app.conf.result_exception_modules = ["shop.errors"]

PRICES = {"sku-apple": 120, "sku-pear": 95, "sku-fig": 310}  # cents

Order = dict[str, Any]


def order_total(order: Order) -> int:
    """What the order costs, in cents."""
    return sum(PRICES[sku] * quantity for sku, quantity in order["items"].items())


@app.task
def reserve_stock(order: Order) -> Order:
    """Take the order's items out of stock. ``OutOfStockError`` is not retried: waiting does
    not make stock appear."""
    services.inventory.reserve(order["items"])
    return order


# A timeout is worth retrying, a declined card is not: only GatewayTimeoutError retries, with
# exponential backoff (1 s, 2 s, 4 s... with jitter), three times at most.
@app.task(autoretry_for=(GatewayTimeoutError,), retry_backoff=True, max_retries=3)
def charge_card(order: Order) -> Order:
    """Charge the order's card (at most once per order, whatever the retries)."""
    charge_id = services.gateway.charge(
        order["card"], order_total(order), idempotency_key=order["id"]
    )
    return {**order, "charge_id": charge_id}


@app.task(queue="emails")
def send_confirmation(order: Order) -> int:
    """Email the customer that the order is paid; the email's number."""
    total = order_total(order) / 100
    return services.mailer.send(
        order["email"],
        f"Order {order['id']} confirmed",
        f"We charged {total:.2f} EUR ({order['charge_id']}). Thank you!",
    )


def checkout(order: Order) -> AsyncResult:
    """Place an order: reserve, charge, confirm, each step given the previous one's result."""
    return chain(reserve_stock.s(order), charge_card.s(), send_confirmation.s()).delay()


@app.task(bind=True, max_retries=5)
def ship_order(self: Any, order_id: str) -> str:
    """Hand the order to the warehouse; when it is busy, try again in a minute."""
    try:
        return services.warehouse.ship(order_id)
    except WarehouseBusyError as exc:
        raise self.retry(countdown=60, exc=exc) from exc


@app.task
def stock_level(sku: str) -> dict[str, Any]:
    """How many of ``sku`` are left."""
    return {"sku": sku, "left": services.inventory.level(sku)}


@app.task
def low_stock_report(levels: list[dict[str, Any]], threshold: int = 3) -> list[str]:
    """The SKUs with fewer than ``threshold`` left, from ``stock_level`` results."""
    return sorted(level["sku"] for level in levels if level["left"] < threshold)


def restock_check(skus: list[str]) -> AsyncResult:
    """Look at every SKU in parallel, then report the low ones (a chord)."""
    return chord([stock_level.s(sku) for sku in skus], low_stock_report.s()).delay()


@app.task(queue="emails")
def send_newsletter(email: str, issue: str) -> int:
    """Send one subscriber this month's newsletter."""
    return services.mailer.send(email, f"Newsletter: {issue}", "New in the shop this month...")


def announce(issue: str, subscribers: list[str]) -> GroupResult:
    """Send the newsletter to every subscriber at once (a group)."""
    return group(send_newsletter.s(email, issue) for email in subscribers).delay()
