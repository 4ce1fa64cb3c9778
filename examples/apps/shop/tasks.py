"""The shop's tasks: what its web apps and scripts submit and its workers run.

Run workers for them with ``celeriac worker -A shop.tasks -Q emails`` (from this
folder, or with it on PYTHONPATH); under Kubernetes, examples/workerpool.yaml runs
them in an image built FROM the Celeriac worker image (images/worker/).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence

from celeriac import Celeriac

# CELERIAC_NATS_URL says where NATS is; outside Kubernetes the queue is created on first use.
app = Celeriac("shop", default_queue="emails")

# How long "sending" an email takes, in seconds: a stand-in for a mail server's latency.
MAIL_LATENCY = float(os.environ.get("SHOP_MAIL_LATENCY", "0.1"))


def receipt_total(items: Sequence[Mapping[str, int]]) -> int:
    """The total of an order in cents; a clear error for a malformed line."""
    total = 0
    for line in items:
        price, quantity = line.get("price_cents"), line.get("quantity")
        if not isinstance(price, int) or not isinstance(quantity, int) or quantity < 1:
            raise ValueError(f"bad order line {dict(line)!r}: need price_cents and quantity >= 1")
        total += price * quantity
    return total


@app.task(queue="emails", autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=3)
async def send_receipt(order_id: int, email: str, items: list[dict[str, int]]) -> dict[str, object]:
    """Render an order's receipt and send it by email."""
    total = receipt_total(items)
    await asyncio.sleep(MAIL_LATENCY)  # talking to the mail server
    return {"order_id": order_id, "to": email, "total_cents": total, "status": "sent"}


@app.task(queue="emails")
def order_total(items: list[dict[str, int]]) -> int:
    """A plain ``def`` task: the total of an order in cents."""
    return receipt_total(items)


@app.task(queue="emails")
async def send_digest(audience: str, dry_run: bool = False) -> dict[str, object]:
    """The daily digest: run by the TaskSchedule in examples/taskschedule.yaml."""
    await asyncio.sleep(MAIL_LATENCY)
    return {"audience": audience, "status": "checked" if dry_run else "sent"}
