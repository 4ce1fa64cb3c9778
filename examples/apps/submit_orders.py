"""A plain script that submits a batch of receipt emails and waits for every result.

    celeriac worker -A shop.tasks -Q emails &        # from this folder
    python submit_orders.py --count 200

Exit status 0 when every receipt came back with the right total, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from shop.tasks import app, receipt_total, send_receipt


def make_order(order_id: int, rng: random.Random) -> tuple[int, str, list[dict[str, int]]]:
    """A random but reproducible order."""
    items = [
        {"price_cents": rng.randint(100, 5000), "quantity": rng.randint(1, 3)}
        for _ in range(rng.randint(1, 4))
    ]
    return order_id, f"customer{order_id}@example.com", items


def main(argv: list[str] | None = None) -> int:
    """Submit ``--count`` orders, wait for all of them, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="orders to submit")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait in all")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    rng = random.Random(args.seed)
    orders = [make_order(i, rng) for i in range(args.count)]
    started = time.monotonic()
    results = [send_receipt.delay(*order) for order in orders]
    print(f"submitted {len(results)} orders in {time.monotonic() - started:.2f}s", flush=True)
    deadline = started + args.timeout
    wrong = 0
    for (order_id, _, items), result in zip(orders, results, strict=True):
        receipt = result.get(timeout=max(deadline - time.monotonic(), 0.1), propagate=False)
        if not isinstance(receipt, dict) or receipt.get("total_cents") != receipt_total(items):
            print(f"order {order_id}: unexpected result {receipt!r}", file=sys.stderr)
            wrong += 1
    elapsed = time.monotonic() - started
    print(f"{args.count - wrong}/{args.count} receipts sent correctly in {elapsed:.2f}s")
    app.close()
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
