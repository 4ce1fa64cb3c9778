"""Submitting on commit, with real Django, a real nats-server and a real worker.

The example shop's view writes an order and submits its task in one transaction;
the worker (``celeriac worker -A shopsite``) reads the committed row.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.db.utils import ConnectionDoesNotExist
from django.test import Client

from celeriac.app import Celeriac
from tests.django.conftest import SHOP, published
from tests.support import Worker, start_worker, wait_until

pytestmark = pytest.mark.integration


def post_order(**order: Any) -> tuple[int, dict[str, Any]]:
    response = Client().post("/orders/", json.dumps(order), content_type="application/json")
    return response.status_code, response.json()


def test_a_committed_order_is_processed_by_the_worker(
    shop: Celeriac, shop_worker: Worker, nats_url: str
) -> None:
    from orders.models import Order

    before = published(nats_url, shop.default_queue)
    status, body = post_order(email="ada@example.com", total_cents=2499)
    assert status == 202, body
    assert published(nats_url, shop.default_queue) == before + 1
    result = shop.AsyncResult(body["task_id"]).get(timeout=15)
    assert result == {"order_id": body["order_id"], "status": "processed", "total_cents": 2499}
    order = Order.objects.get(pk=body["order_id"])
    assert order.status == Order.PROCESSED
    assert order.processed_at is not None


def test_a_rolled_back_order_submits_nothing(
    shop: Celeriac, shop_worker: Worker, nats_url: str
) -> None:
    from orders.models import Order

    orders, before = Order.objects.count(), published(nats_url, shop.default_queue)
    status, body = post_order(email="bob@example.com", total_cents=100, card="declined")
    assert status == 402, body
    assert Order.objects.count() == orders
    # The worker and the server have had their chance: a committed order after it is
    # processed, and it is the only message the queue got.
    status, body = post_order(email="bob@example.com", total_cents=100)
    assert status == 202
    shop.AsyncResult(body["task_id"]).get(timeout=15)
    assert published(nats_url, shop.default_queue) == before + 1


def test_a_rolled_back_savepoint_drops_its_task_and_keeps_the_outer_one(
    shop: Celeriac, nats_url: str
) -> None:
    from orders.models import Order
    from orders.tasks import process_order

    before = published(nats_url, shop.default_queue)
    with transaction.atomic():
        kept = Order.objects.create(email="c@example.com", total_cents=1)
        process_order.delay_on_commit(kept.pk)
        with pytest.raises(RuntimeError), transaction.atomic():
            dropped = Order.objects.create(email="d@example.com", total_cents=2)
            process_order.delay_on_commit(dropped.pk)
            raise RuntimeError("roll the savepoint back")
        assert published(nats_url, shop.default_queue) == before
    assert published(nats_url, shop.default_queue) == before + 1


def test_outside_a_transaction_the_task_is_sent_at_once(shop: Celeriac, nats_url: str) -> None:
    from giftcards.tasks import card_balance

    before = published(nats_url, shop.default_queue)
    result = card_balance.delay_on_commit("gift-1")
    assert published(nats_url, shop.default_queue) == before + 1
    assert result.id


def test_using_waits_for_that_database(shop: Celeriac, nats_url: str) -> None:
    from giftcards.tasks import card_balance

    before = published(nats_url, shop.default_queue)
    with transaction.atomic(using="audit"):
        with transaction.atomic():  # the default database commits: not the one named
            card_balance.apply_async_on_commit(("gift-2",), using="audit")
        assert published(nats_url, shop.default_queue) == before
    assert published(nats_url, shop.default_queue) == before + 1


def test_mistakes_raise_inside_the_transaction(shop: Celeriac, nats_url: str) -> None:
    from orders.models import Order
    from orders.tasks import process_order

    orders, before = Order.objects.count(), published(nats_url, shop.default_queue)
    with pytest.raises(TypeError, match="JSON"), transaction.atomic():
        order = Order.objects.create(email="e@example.com", total_cents=5)
        process_order.delay_on_commit(order)  # the model, not its id
    with pytest.raises(TypeError, match="colour"), transaction.atomic():
        process_order.apply_async_on_commit((1,), colour="blue")
    with pytest.raises(ConnectionDoesNotExist), transaction.atomic():
        process_order.apply_async_on_commit((1,), using="nope")
    assert Order.objects.count() == orders
    assert published(nats_url, shop.default_queue) == before


def test_the_result_handle_is_known_before_the_commit(
    shop: Celeriac, shop_worker: Worker, nats_url: str
) -> None:
    from orders.models import Order
    from orders.tasks import process_order

    with transaction.atomic():
        order = Order.objects.create(email="f@example.com", total_cents=7)
        result = process_order.apply_async_on_commit((order.pk,), task_id=f"order-{order.pk}")
        assert result.id == f"order-{order.pk}"
        assert result.state == "PENDING"
    assert result.get(timeout=15)["status"] == "processed"
    wait_until(
        lambda: Order.objects.get(pk=order.pk).status == Order.PROCESSED,
        timeout=5,
        what="the order row marked processed",
    )


def test_a_worker_thread_does_not_keep_a_stale_connection(shop: Celeriac) -> None:
    from django.db import connection
    from orders.models import Order
    from orders.tasks import process_order

    order = Order.objects.create(email="g@example.com", total_cents=9)

    def run_as_the_worker_does() -> tuple[Any, bool]:
        connection.ensure_connection()  # left open by an earlier task on this thread
        value = process_order.fn(order.pk)
        # CONN_MAX_AGE is 0: like a request, each run ends with the connection closed.
        return value, connection.connection is None

    with ThreadPoolExecutor(1) as pool:
        value, closed = pool.submit(run_as_the_worker_does).result(timeout=10)
    assert value["status"] == "processed"
    assert closed


def test_a_direct_call_inside_a_transaction_keeps_its_connection(shop: Celeriac) -> None:
    from django.db import connection
    from orders.models import Order
    from orders.tasks import process_order

    with transaction.atomic():
        order = Order.objects.create(email="h@example.com", total_cents=11)
        assert process_order(order.pk)["status"] == "processed"
        assert connection.connection is not None
        assert Order.objects.get(pk=order.pk).status == Order.PROCESSED


def test_the_processes_pool_sets_django_up_in_each_child(
    shop: Celeriac, shop_env: dict[str, str], tmp_path: Path
) -> None:
    from orders.models import Order
    from orders.tasks import process_order

    queue = f"{shop.default_queue}-processes"
    worker = start_worker(
        queue, nats_url=shop_env["CELERIAC_NATS_URL"], log_dir=tmp_path, name="processes",
        app="shopsite", apps_dir=SHOP, pool="processes", concurrency=1, env=shop_env, cwd=SHOP,
    )  # fmt: skip
    try:
        with transaction.atomic():
            order = Order.objects.create(email="i@example.com", total_cents=13)
            result = process_order.apply_async_on_commit((order.pk,), queue=queue)
        assert result.get(timeout=20)["status"] == "processed"
    finally:
        worker.process.stop(grace=5)
    assert Order.objects.get(pk=order.pk).status == Order.PROCESSED
