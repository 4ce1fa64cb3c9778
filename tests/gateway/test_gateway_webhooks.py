"""The ``webhook`` field of a submit: the SDK's ``webhook=`` option over HTTP. A good
one reaches the stored message, and through a worker and ``celeriac webhooks`` the
receiver; a bad one is a problem naming the field at fault, in the single and the
batch form. The table cases run the gateway in process on the session's nats-server."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from celeriac_devenv.processes import spawn
from standardwebhooks import Webhook

from celeriac.broker import Broker
from celeriac.gateway.app import build
from celeriac.gateway.checking import webhook_field
from celeriac.gateway.settings import settings_from
from celeriac.protocol import names
from tests.gateway.conftest import Tokens, problem, stored
from tests.support import StartWorker, await_until

pytestmark = pytest.mark.integration

HOOK = "https://hooks.example.com/celeriac?token=abc"


@pytest.fixture
async def gw(nats_url: str, tokens: Tokens, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in process; the test's queue exists (no worker consumes it)."""
    await broker.ensure_queue(tokens.queue)
    settings = settings_from(
        ["--nats-url", nats_url], {"CELERIAC_GATEWAY_TOKENS_FILE": str(tokens.path)}
    )
    api = build(settings)
    try:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as session:
            yield session
    finally:
        await api.state.gateway.celeriac.aclose()


async def _messages(broker: Broker, queue: str) -> list[dict[str, Any]]:
    """The task messages ``queue``'s work stream holds, oldest first."""
    stream = names.stream_name(queue)
    info = await broker.js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    return [json.loads((await broker.js.get_msg(stream, seq)).data or b"{}")
            for seq in range(first, last + 1)]  # fmt: skip


async def test_a_webhook_reaches_the_stored_message_in_both_spellings(
    gw: httpx.AsyncClient, tokens: Tokens, broker: Broker
) -> None:
    auth = tokens.bearer(tokens.all)
    plain = {"task": "tasks.add", "args": [1, 2], "queue": tokens.queue, "webhook": HOOK}
    full = {**plain, "webhook": {"url": HOOK, "events": ["failed", "dead_lettered"],
                                 "secret": "billing"}}  # fmt: skip
    none = {**plain, "webhook": None}
    one = await gw.post("/v1/tasks", json=plain, headers=auth)
    assert one.status_code == 202, one.text
    batch = await gw.post("/v1/tasks:batch", json={"tasks": [full, none]}, headers=auth)
    assert batch.status_code == 202, batch.text
    first, second, third = await _messages(broker, tokens.queue)
    assert first["webhook"] == {"url": HOOK, "events": ["succeeded", "failed"],
                                "secret": "default"}  # fmt: skip
    assert second["webhook"] == {"url": HOOK, "events": ["failed", "dead_lettered"],
                                 "secret": "billing"}  # fmt: skip
    assert third.get("webhook") is None


BAD = [
    ("not a URL", "ftp://x", "webhook.url", "webhook url: must be an http:// or https:// URL"),
    ("no host", {"url": "https://"}, "webhook.url", "with a host"),
    ("a user in the URL", "https://u:p@example.com/", "webhook.url", "user name or password"),
    ("too long", "https://example.com/" + "a" * 2048, "webhook.url", "at most 2048"),
    ("no url", {"events": ["failed"]}, "webhook.url", "webhook url: Field required"),
    ("an unknown event", {"url": HOOK, "events": ["failed", "done"]}, "webhook.events[1]",
     "use succeeded, failed, dead_lettered"),
    ("no events", {"url": HOOK, "events": []}, "webhook.events", "at least one"),
    ("a bad secret name", {"url": HOOK, "secret": "a b"}, "webhook.secret", "a secret's name"),
    ("an unknown key", {"url": HOOK, "headers": {}}, "webhook", "unknown key(s) 'headers'"),
    ("a number", 5, "webhook", "must be a URL or a dict"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
async def test_a_bad_webhook_is_refused_naming_the_field(
    gw: httpx.AsyncClient, tokens: Tokens, broker: Broker, case: tuple[str, Any, str, str]
) -> None:
    what, webhook, field, words = case
    body = {"task": "tasks.add", "queue": tokens.queue, "webhook": webhook}
    auth = tokens.bearer(tokens.all)
    response = await gw.post("/v1/tasks", json=body, headers=auth)
    assert response.status_code == 422, (what, response.text)
    [error] = problem(response)["errors"]
    assert error["field"] == field, (what, error)
    assert words in error["detail"], (what, error)
    batch = await gw.post("/v1/tasks:batch", json={"tasks": [body]}, headers=auth)
    assert batch.status_code == 207, batch.text
    [item] = batch.json()["results"]
    assert [e["field"] for e in item["errors"]] == [f"tasks[0].{field}"]
    assert await stored(broker, tokens.queue) == 0


@pytest.mark.parametrize(
    ("sentence", "field"),
    [("webhook url: must be ...", "webhook.url"),
     ("webhook events.0: use ...", "webhook.events[0]"),
     ("webhook: unknown key(s) 'x'; use url, events, secret", "webhook"),
     ("webhook must be a URL or a dict with url, events, secret; not int", "webhook")],
)  # fmt: skip
def test_the_field_is_read_from_the_sdk_sentence(sentence: str, field: str) -> None:
    assert webhook_field(sentence) == field


async def test_the_openapi_document_describes_the_webhook(gw: httpx.AsyncClient) -> None:
    document = (await gw.get("/openapi.json")).json()
    webhook = document["components"]["schemas"]["TaskRequest"]["properties"]["webhook"]
    url, target, _ = webhook["anyOf"]
    assert url["type"] == "string" and url["maxLength"] == 2048
    assert target["required"] == ["url"]
    assert target["properties"]["events"]["items"]["enum"] == [
        "succeeded", "failed", "dead_lettered"]  # fmt: skip
    assert target["additionalProperties"] is False


async def test_a_submitted_webhook_reaches_its_receiver_signed(
    *,
    http: httpx.AsyncClient,
    tokens: Tokens,
    start_worker: StartWorker,
    tmp_path: Path,
    nats_url: str,
) -> None:
    secret = "whsec_" + base64.b64encode(b"g" * 32).decode()
    arrivals: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        arrivals.append(Webhook(secret).verify(await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/done", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    secrets_file = tmp_path / "webhook-secrets.json"
    secrets_file.write_text(json.dumps({"gw": secret}))
    dispatcher = spawn(
        "webhooks",
        [sys.executable, "-m", "celeriac", "webhooks", "--secrets-file", str(secrets_file),
         "--allow-private", "--health-port", "0"],
        log_dir=tmp_path, env={**os.environ, "CELERIAC_NATS_URL": nats_url},
    )  # fmt: skip
    try:
        start_worker(tokens.queue)
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/done"
        response = await http.post(
            "/v1/tasks", headers=tokens.bearer(tokens.limited),
            json={"task": "tasks.add", "args": [2, 3], "queue": tokens.queue,
                  "webhook": {"url": url, "secret": "gw"}},
        )  # fmt: skip
        assert response.status_code == 202, response.text
        await await_until(lambda: arrivals, timeout=30, what="the webhook", alive=dispatcher)
    finally:
        dispatcher.stop(grace=5)
        await runner.cleanup()
    [event] = arrivals
    assert event["type"] == "task.succeeded"
    assert event["data"] == {"task_id": response.json()["id"], "task": "tasks.add",
                             "queue": tokens.queue, "state": "SUCCESS", "result": 5}  # fmt: skip
