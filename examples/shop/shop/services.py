"""Stand-ins for the services the shop talks to: stock, a payment gateway, a mail server
and a warehouse.

They keep their state in this process and behave as such services' test modes do:
the card token says what the gateway does (``tok_visa`` is charged, ``tok_declined``
is declined, ``tok_flaky`` times out twice and then goes through, ``tok_down`` always
times out). A real shop would call HTTP APIs here; the tasks would not change.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from shop.errors import (
    GatewayTimeoutError,
    OutOfStockError,
    PaymentDeclinedError,
    WarehouseBusyError,
)

_lock = threading.Lock()


@dataclass
class Inventory:
    """Items left, by SKU."""

    levels: dict[str, int] = field(default_factory=dict)

    def reserve(self, items: dict[str, int]) -> None:
        """Take ``items`` (SKU -> quantity) out of stock, all or nothing."""
        with _lock:
            for sku, quantity in items.items():
                left = self.levels.get(sku, 0)
                if quantity > left:
                    raise OutOfStockError(f"{sku}: {quantity} asked, {left} left")
            for sku, quantity in items.items():
                self.levels[sku] -= quantity

    def level(self, sku: str) -> int:
        """How many of ``sku`` are left."""
        with _lock:
            return self.levels.get(sku, 0)


@dataclass
class Gateway:
    """A payment gateway: charges a card token, at most once per idempotency key."""

    charges: dict[str, int] = field(default_factory=dict)  # charge id -> cents
    attempts: dict[str, int] = field(default_factory=dict)  # idempotency key -> calls
    by_key: dict[str, str] = field(default_factory=dict)  # idempotency key -> charge id
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def charge(self, token: str, cents: int, *, idempotency_key: str) -> str:
        """Charge ``cents`` to the card; the charge id."""
        with _lock:
            calls = self.attempts[idempotency_key] = self.attempts.get(idempotency_key, 0) + 1
            if token == "tok_declined":
                raise PaymentDeclinedError(f"card declined for {idempotency_key}")
            if token == "tok_down" or (token == "tok_flaky" and calls <= 2):
                raise GatewayTimeoutError(f"no answer from the gateway for {idempotency_key}")
            if idempotency_key not in self.by_key:
                charge_id = f"ch_{next(self._ids)}"
                self.by_key[idempotency_key] = charge_id
                self.charges[charge_id] = cents
            return self.by_key[idempotency_key]


@dataclass(frozen=True)
class Email:
    """One email sent."""

    to: str
    subject: str
    body: str


@dataclass
class Mailer:
    """A mail server: what was sent is in ``outbox``."""

    outbox: list[Email] = field(default_factory=list)

    def send(self, to: str, subject: str, body: str) -> int:
        """Send an email; its number in the outbox."""
        with _lock:
            self.outbox.append(Email(to, subject, body))
            return len(self.outbox)


@dataclass
class Warehouse:
    """The warehouse: busy for its first ``busy_for`` requests, then takes shipments."""

    busy_for: int = 0
    shipped: list[str] = field(default_factory=list)

    def ship(self, order_id: str) -> str:
        """Hand an order over for shipping; its tracking number."""
        with _lock:
            if self.busy_for > 0:
                self.busy_for -= 1
                raise WarehouseBusyError(f"the warehouse is busy, order {order_id} not taken")
            self.shipped.append(order_id)
            return f"TRACK-{order_id}"


inventory = Inventory()
gateway = Gateway()
mailer = Mailer()
warehouse = Warehouse()


def reset(stock: dict[str, int] | None = None, *, warehouse_busy_for: int = 0) -> None:
    """Start afresh: ``stock`` as the levels, nothing charged, sent or shipped."""
    with _lock:
        inventory.levels = dict(stock or {})
        gateway.charges.clear()
        gateway.attempts.clear()
        gateway.by_key.clear()
        mailer.outbox.clear()
        warehouse.shipped.clear()
        warehouse.busy_for = warehouse_busy_for
