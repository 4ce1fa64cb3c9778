"""``celeriac gateway`` as a subprocess, with real ``celeriac worker`` subprocesses on a
real nats-server: submit and long-poll, idempotent retries, batches, revoking, queues,
metrics and signed inbound webhooks."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from celeriac.broker import Broker
from tests.gateway.conftest import StartGateway, Tokens, problem, stored
from tests.support import StartWorker

pytestmark = pytest.mark.integration


async def test_submit_then_long_poll_the_result(
    http: httpx.AsyncClient, tokens: Tokens, start_worker: StartWorker
) -> None:
    start_worker(tokens.queue)
    auth = tokens.bearer(tokens.limited)
    response = await http.post(
        "/v1/tasks", json={"task": "tasks.add", "args": [2, 3], "queue": tokens.queue}, headers=auth
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == f"/v1/tasks/{accepted['id']}" == accepted["location"]
    done = await http.get(f"{response.headers['location']}?wait=30", headers=auth)
    assert done.status_code == 200
    assert done.json() | {"date_done": None} == {
        "id": accepted["id"], "state": "SUCCESS", "task": "tasks.add", "result": 5,
        "error": None, "exc_type": None, "traceback": None, "retries": 0, "date_done": None,
    }  # fmt: skip
    assert done.json()["date_done"]
    failing = await http.post(
        "/v1/tasks", json={"task": "tasks.fail", "queue": tokens.queue}, headers=auth
    )
    failed = (await http.get(f"/v1/tasks/{failing.json()['id']}?wait=30", headers=auth)).json()
    assert failed["state"] == "FAILURE"
    assert failed["exc_type"] == "ValueError" and "broken on purpose" in failed["error"]
    assert "Traceback" in failed["traceback"]


async def test_a_long_poll_ends_at_its_wait_while_pending(
    http: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await http.get(
        "/v1/tasks/never-submitted?wait=0.5", headers=tokens.bearer(tokens.all)
    )
    assert response.status_code == 200
    assert response.json()["state"] == "PENDING"


async def test_a_retried_request_enqueues_once(
    http: httpx.AsyncClient, tokens: Tokens, broker: Broker, start_worker: StartWorker
) -> None:
    await broker.ensure_queue(tokens.queue)  # nothing consumes it yet
    key = f"order-{secrets.token_hex(6)}"
    headers = {**tokens.bearer(tokens.limited), "Idempotency-Key": key}
    body = {"task": "tasks.add", "args": [20, 22], "queue": tokens.queue}
    first = await http.post("/v1/tasks", json=body, headers=headers)
    again = await http.post("/v1/tasks", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] == key
    assert await stored(broker, tokens.queue) == 1
    start_worker(tokens.queue)
    done = await http.get(f"/v1/tasks/{key}?wait=30", headers=headers)
    assert done.json()["state"] == "SUCCESS" and done.json()["result"] == 42


async def test_a_batch_enqueues_every_item(
    http: httpx.AsyncClient, tokens: Tokens, start_worker: StartWorker
) -> None:
    start_worker(tokens.queue)
    auth = tokens.bearer(tokens.all)
    items = [{"task": "tasks.add", "args": [i, i], "queue": tokens.queue} for i in range(5)]
    for path in ("/v1/tasks:batch", "/v1/tasks/batch"):
        response = await http.post(path, json={"tasks": items}, headers=auth)
        assert response.status_code == 202, response.text
        results = response.json()["results"]
        assert [r["status"] for r in results] == [202] * 5
        got = [(await http.get(f"{r['location']}?wait=30", headers=auth)).json() for r in results]
        assert [g["result"] for g in got] == [0, 2, 4, 6, 8]


async def test_delete_revokes_a_task(
    http: httpx.AsyncClient, tokens: Tokens, start_worker: StartWorker
) -> None:
    start_worker(tokens.queue)
    auth = tokens.bearer(tokens.limited)
    later = await http.post(
        "/v1/tasks", json={"task": "tasks.add", "args": [1, 1], "queue": tokens.queue,
                           "countdown": 2}, headers=auth,
    )  # fmt: skip
    task_id = later.json()["id"]
    revoked = await http.delete(f"/v1/tasks/{task_id}", headers=auth)
    assert revoked.status_code == 202
    assert revoked.json()["state"] == "REVOKED"
    # Its countdown passes and the worker skips it: it stays revoked, never SUCCESS.
    marker = await http.post(
        "/v1/tasks", json={"task": "tasks.add", "args": [0, 0], "queue": tokens.queue,
                           "countdown": 3}, headers=auth,
    )  # fmt: skip
    await http.get(f"/v1/tasks/{marker.json()['id']}?wait=30", headers=auth)
    final = (await http.get(f"/v1/tasks/{task_id}", headers=auth)).json()
    assert final["state"] == "REVOKED" and final["result"] is None


async def test_queues_and_metrics(http: httpx.AsyncClient, tokens: Tokens, broker: Broker) -> None:
    await broker.ensure_queue(tokens.queue)
    auth = tokens.bearer(tokens.limited)
    for n in range(3):
        response = await http.post(
            "/v1/tasks", json={"task": "tasks.add", "args": [n, n], "queue": tokens.queue},
            headers=auth,
        )  # fmt: skip
        assert response.status_code == 202
    refused = await http.post("/v1/tasks", json={"task": 1}, headers=auth)
    assert refused.status_code == 422
    queues = (await http.get("/v1/queues", headers=auth)).json()["queues"]
    assert queues == [{"queue": tokens.queue, "waiting": 3, "in_flight": 0, "redelivered": 0,
                       "delayed": 0, "dead_letters": 0}]  # fmt: skip
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).status_code == 200
    metrics = (await http.get("/metrics")).text
    assert (
        'celeriac_gateway_requests_total{method="POST",route="/v1/tasks",status="202"} 3.0'
        in metrics
    )
    assert (
        'celeriac_gateway_requests_total{method="POST",route="/v1/tasks",status="422"} 1.0'
        in metrics
    )
    assert (
        'celeriac_gateway_requests_total{method="GET",route="/v1/queues",status="200"} 1.0'
        in metrics
    )
    assert 'celeriac_gateway_submit_seconds_count{outcome="accepted"} 3.0' in metrics


def _signed(secret: str, body: bytes, msg_id: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of a delivery, signed by the reference library."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
        "x-shop-event": "order.created",
        "x-not-selected": "dropped",
    }


async def test_a_signed_hook_becomes_a_task_once(
    http: httpx.AsyncClient, tokens: Tokens, broker: Broker, start_worker: StartWorker
) -> None:
    await broker.ensure_queue(tokens.hook_queue)
    body = json.dumps({"order": 1234, "total": "9.99"}).encode()
    msg_id = f"msg_{secrets.token_hex(8)}"
    headers = _signed(tokens.hook_secret, body, msg_id, datetime.now(UTC))
    first = await http.post("/v1/hooks/orders", content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json()["id"] == msg_id
    redelivered = await http.post("/v1/hooks/orders", content=body, headers=headers)
    assert redelivered.status_code == 202 and redelivered.json()["id"] == msg_id
    assert await stored(broker, tokens.hook_queue) == 1
    start_worker(tokens.hook_queue)
    done = await http.get(f"/v1/tasks/{msg_id}?wait=30", headers=tokens.bearer(tokens.all))
    assert done.json()["result"] == {
        "payload": {"order": 1234, "total": "9.99"},
        "headers": {"x-shop-event": "order.created"},
    }


async def test_a_forged_or_stale_hook_is_refused_before_enqueuing(
    http: httpx.AsyncClient, tokens: Tokens, broker: Broker
) -> None:
    await broker.ensure_queue(tokens.hook_queue)
    body = json.dumps({"order": 1}).encode()
    other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    now = datetime.now(UTC)
    attempts = {
        "another secret": _signed(other, body, "msg_forged", now),
        "too old": _signed(tokens.hook_secret, body, "msg_old", now - timedelta(minutes=6)),
        "no signature": {"content-type": "application/json"},
        "body changed": _signed(tokens.hook_secret, b'{"order": 2}', "msg_changed", now),
    }
    for what, headers in attempts.items():
        response = await http.post("/v1/hooks/orders", content=body, headers=headers)
        assert response.status_code == 401, (what, response.text)
        problem(response)
    # A bearer token is not a signature.
    token = await http.post("/v1/hooks/orders", content=body, headers=tokens.bearer(tokens.all))
    assert token.status_code == 401
    assert await stored(broker, tokens.hook_queue) == 0


async def test_the_gateway_refuses_to_start_without_tokens(start_gateway: StartGateway) -> None:
    with pytest.raises(AssertionError, match="no tokens: set CELERIAC_GATEWAY_TOKENS_FILE"):
        start_gateway()
