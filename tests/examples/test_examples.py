"""Every example app submits real tasks that a real worker runs, against a real nats-server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from celeriac_devenv.nats import NatsServer

pytestmark = pytest.mark.integration

APPS = Path(__file__).resolve().parents[2] / "examples" / "apps"
ORDER = {
    "order_id": 42,
    "email": "ada@example.com",
    "items": [{"price_cents": 250, "quantity": 2}, {"price_cents": 1999, "quantity": 1}],
}
RECEIPT = {"order_id": 42, "to": "ada@example.com", "total_cents": 2499, "status": "sent"}


def test_receipt_total_rejects_malformed_lines() -> None:
    from shop.tasks import receipt_total

    assert receipt_total(ORDER["items"]) == 2499  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantity >= 1"):
        receipt_total([{"price_cents": 100, "quantity": 0}])


def test_flask_app_submits_and_reads_back(shop_app: Any) -> None:
    from flask_app import web

    client = web.test_client()
    created = client.post("/orders", json=ORDER)
    assert created.status_code == 202, created.get_json()
    task_id = created.get_json()["task_id"]
    done = client.get(f"/tasks/{task_id}?wait=20")
    assert done.get_json() == {"task_id": task_id, "state": "SUCCESS", "result": RECEIPT}


def test_flask_app_rejects_bad_orders(shop_app: Any) -> None:
    from flask_app import web

    client = web.test_client()
    bad = client.post("/orders", json={"order_id": "x"})
    assert bad.status_code == 400
    assert "order_id" in bad.get_json()["error"]
    assert client.post("/orders", data="not json").status_code == 400


def test_flask_app_reports_a_failed_task(shop_app: Any) -> None:
    from flask_app import web

    client = web.test_client()
    order = {**ORDER, "items": [{"price_cents": 100, "quantity": 0}]}
    task_id = client.post("/orders", json=order).get_json()["task_id"]
    body = client.get(f"/tasks/{task_id}?wait=30").get_json()
    assert body["state"] == "FAILURE"
    assert "quantity >= 1" in body["error"]


def test_fastapi_app_submits_and_reads_back(shop_app: Any) -> None:
    from fastapi.testclient import TestClient
    from fastapi_app import api

    with TestClient(api) as client:
        created = client.post("/orders", json=ORDER)
        assert created.status_code == 202, created.json()
        task_id = created.json()["task_id"]
        done = client.get(f"/tasks/{task_id}", params={"wait": 20})
        assert done.json() == {"task_id": task_id, "state": "SUCCESS", "result": RECEIPT}
        unknown = client.get("/tasks/no-such-task")
        assert unknown.json() == {"task_id": "no-such-task", "state": "PENDING"}


def test_fastapi_app_validates_orders(shop_app: Any) -> None:
    from fastapi.testclient import TestClient
    from fastapi_app import api

    with TestClient(api) as client:
        bad = client.post("/orders", json={**ORDER, "items": []})
        assert bad.status_code == 422


def test_script_submits_a_batch(shop_nats: NatsServer, shop_worker: Any) -> None:
    env = {**os.environ, "CELERIAC_NATS_URL": shop_nats.url}
    proc = subprocess.run(
        [sys.executable, "submit_orders.py", "--count", "300", "--timeout", "60"],
        cwd=APPS, env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "300/300 receipts sent correctly" in proc.stdout


def test_script_rejects_a_bad_count(shop_nats: NatsServer) -> None:
    env = {**os.environ, "CELERIAC_NATS_URL": shop_nats.url}
    proc = subprocess.run(
        [sys.executable, "submit_orders.py", "--count", "0"],
        cwd=APPS, env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--count must be at least 1" in proc.stderr
