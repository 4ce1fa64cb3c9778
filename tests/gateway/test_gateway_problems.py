"""Bad requests get RFC 9457 problem details naming the field, never a 500; tokens
decide who may do what. The app runs in process (ASGI) on the session's nats-server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from celeriac_devenv.processes import free_port

from celeriac.broker import Broker
from celeriac.gateway.app import build
from celeriac.gateway.settings import settings_from
from tests.gateway.conftest import Tokens, problem, stored

pytestmark = pytest.mark.integration
MAX_BODY = 4096


async def _client(nats_url: str, tokens: Tokens) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_from(
        ["--nats-url", nats_url, "--max-body", str(MAX_BODY)],
        {"CELERIAC_GATEWAY_TOKENS_FILE": str(tokens.path)},
    )
    api = build(settings)
    transport = httpx.ASGITransport(app=api)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as session:
            yield session
    finally:
        await api.state.gateway.celeriac.aclose()


@pytest.fixture
async def gw(nats_url: str, tokens: Tokens, broker: Broker) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in process; the test's queue exists (no worker consumes it)."""
    await broker.ensure_queue(tokens.queue)
    async for session in _client(nats_url, tokens):
        yield session


GOOD = {"task": "tasks.add", "args": [2, 3]}
# (what, body (dict, or raw bytes), extra headers, status, the field named)
BAD_SUBMITS: list[tuple[str, Any, dict[str, str], int, str]] = [
    ("malformed JSON", b'{"task": "tasks.add", ', {}, 400, "body"),
    ("not UTF-8", b'{"task": "\xff"}', {}, 400, "body"),
    ("a list, not an object", [GOOD], {}, 422, "body"),
    ("no task", {"args": [1]}, {}, 422, "task"),
    ("task not a string", {"task": 5}, {}, 422, "task"),
    ("empty task", {"task": ""}, {}, 422, "task"),
    ("args not a list", {**GOOD, "args": "2, 3"}, {}, 422, "args"),
    ("kwargs not an object", {**GOOD, "kwargs": [1]}, {}, 422, "kwargs"),
    ("countdown a string", {**GOOD, "countdown": "5"}, {}, 422, "countdown"),
    ("countdown negative", {**GOOD, "countdown": -1}, {}, 422, "countdown"),
    ("countdown a boolean", {**GOOD, "countdown": True}, {}, 422, "countdown"),
    ("countdown out of range", {**GOOD, "countdown": 1e12}, {}, 422, "countdown"),
    ("eta not a time", {**GOOD, "eta": "tomorrow"}, {}, 422, "eta"),
    ("eta a number", {**GOOD, "eta": 12}, {}, 422, "eta"),
    ("countdown and eta", {**GOOD, "countdown": 5, "eta": "2030-01-01T00:00:00Z"}, {}, 422, "eta"),
    ("expires not a time", {**GOOD, "expires": "soon"}, {}, 422, "expires"),
    ("expires before eta", {**GOOD, "eta": "2030-01-02T00:00:00Z",
                            "expires": "2030-01-01T00:00:00Z"}, {}, 422, "expires"),
    ("expires too far", {**GOOD, "expires": 1e12}, {}, 422, "expires"),
    ("bad queue name", {**GOOD, "queue": "no spaces allowed"}, {}, 422, "queue"),
    ("queue not a string", {**GOOD, "queue": 7}, {}, 422, "queue"),
    ("unknown queue", {**GOOD, "queue": "no-such-queue-anywhere"}, {}, 422, "queue"),
    ("bad task id", {**GOOD, "id": "a/b"}, {}, 422, "id"),
    ("unknown field", {**GOOD, "priority": 9}, {}, 422, "priority"),
    ("bad Idempotency-Key", GOOD, {"Idempotency-Key": "a b"}, 422, "Idempotency-Key"),
    ("id differs from the key", {**GOOD, "id": "x1"}, {"Idempotency-Key": "x2"}, 422, "id"),
    ("oversized body", {**GOOD, "args": ["x" * MAX_BODY]}, {}, 413, "body"),
    ("a form, not JSON", b"task=tasks.add", {"Content-Type": "application/x-www-form-urlencoded"},
     422, "body"),
    ("not Unicode", {**GOOD, "kwargs": {"a": "\ud800"}}, {}, 422, "kwargs"),
    ("a control character in the task", {"task": "tasks\u0000add"}, {}, 422, "task"),
    ("eta in year 1", {**GOOD, "eta": "0001-01-01T00:00:00"}, {}, 422, "eta"),
    ("eta at the calendar's end", {**GOOD, "eta": "9999-12-31T23:59:59-12:00"}, {}, 422, "eta"),
    ("expires in year 1", {**GOOD, "expires": "0001-01-01T00:00:00"}, {}, 422, "expires"),
]  # fmt: skip


def _content(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.mark.parametrize("case", BAD_SUBMITS, ids=[b[0] for b in BAD_SUBMITS])
async def test_a_bad_submit_is_a_problem_naming_the_field(
    gw: httpx.AsyncClient, tokens: Tokens, broker: Broker, case: tuple[Any, ...]
) -> None:
    what, body, headers, status, field = case
    if isinstance(body, dict) and "queue" not in body:
        body = {**body, "queue": tokens.queue}
    response = await gw.post(
        "/v1/tasks", content=_content(body),
        headers={**tokens.bearer(tokens.all), "Content-Type": "application/json", **headers},
    )  # fmt: skip
    assert response.status_code == status, (what, response.text)
    found = problem(response)
    assert field in [e["field"] for e in found["errors"]], (what, found)
    assert await stored(broker, tokens.queue) == 0


BAD_READS = [
    ("wait too long", "/v1/tasks/abc?wait=61", 422, "wait"),
    ("wait negative", "/v1/tasks/abc?wait=-1", 422, "wait"),
    ("wait not a number", "/v1/tasks/abc?wait=soon", 422, "wait"),
    ("bad task id", "/v1/tasks/a%20b", 422, "id"),
]


@pytest.mark.parametrize("case", BAD_READS, ids=[b[0] for b in BAD_READS])
async def test_a_bad_read_is_a_problem_naming_the_field(
    gw: httpx.AsyncClient, tokens: Tokens, case: tuple[str, str, int, str]
) -> None:
    what, path, status, field = case
    response = await gw.get(path, headers=tokens.bearer(tokens.all))
    assert response.status_code == status, (what, response.text)
    assert field in [e["field"] for e in problem(response)["errors"]]


async def test_a_bad_batch_answers_each_item(
    gw: httpx.AsyncClient, tokens: Tokens, broker: Broker
) -> None:
    empty = await gw.post("/v1/tasks:batch", json={"tasks": []}, headers=tokens.bearer(tokens.all))
    assert empty.status_code == 422
    assert [e["field"] for e in problem(empty)["errors"]] == ["tasks"]
    items = [
        {**GOOD, "queue": tokens.queue},
        {**GOOD, "queue": tokens.queue, "countdown": "soon"},
        {**GOOD, "queue": "elsewhere"},
    ]
    mixed = await gw.post("/v1/tasks:batch", json={"tasks": items},
                          headers=tokens.bearer(tokens.limited))  # fmt: skip
    assert mixed.status_code == 207, mixed.text
    first, second, third = mixed.json()["results"]
    assert first["status"] == 202 and first["location"] == f"/v1/tasks/{first['id']}"
    assert second["status"] == 422
    assert second["errors"][0]["field"] == "tasks[1].countdown"
    assert third["status"] == 403
    assert await stored(broker, tokens.queue) == 1


AUTH = [
    ("no token", None, 401),
    ("another scheme", "Basic dXNlcjpwYXNz", 401),
    ("unknown token", "Bearer not-a-configured-token-at-all", 401),
    ("empty bearer", "Bearer ", 401),
]


@pytest.mark.parametrize("auth", AUTH, ids=[a[0] for a in AUTH])
@pytest.mark.parametrize(
    "route",
    [("POST", "/v1/tasks"), ("POST", "/v1/tasks:batch"), ("GET", "/v1/tasks/t1"),
     ("DELETE", "/v1/tasks/t1"), ("GET", "/v1/queues")],
    ids=" ".join,
)  # fmt: skip
async def test_no_valid_token_no_access(
    gw: httpx.AsyncClient,
    tokens: Tokens,
    broker: Broker,
    auth: tuple[str, str | None, int],
    route: tuple[str, str],
) -> None:
    (what, authorization, status), (method, path) = auth, route
    headers = {} if authorization is None else {"Authorization": authorization}
    body = {"tasks": [GOOD]} if path.endswith("batch") else {**GOOD, "queue": tokens.queue}
    response = await gw.request(
        method, path, headers=headers, json=body if method == "POST" else None
    )
    assert response.status_code == status, (what, response.text)
    assert response.headers["www-authenticate"].startswith("Bearer")
    problem(response)
    assert await stored(broker, tokens.queue) == 0


async def test_a_token_uses_only_its_queues(
    gw: httpx.AsyncClient, tokens: Tokens, broker: Broker
) -> None:
    await broker.ensure_queue("gq-other-queue")
    mine = await gw.post("/v1/tasks", json={**GOOD, "queue": tokens.queue},
                         headers=tokens.bearer(tokens.limited))  # fmt: skip
    assert mine.status_code == 202, mine.text
    theirs = await gw.post("/v1/tasks", json={**GOOD, "queue": "gq-other-queue"},
                           headers=tokens.bearer(tokens.limited))  # fmt: skip
    assert theirs.status_code == 403
    assert [e["field"] for e in problem(theirs)["errors"]] == ["queue"]
    # The default queue is a queue like any other.
    default = await gw.post("/v1/tasks", json=GOOD, headers=tokens.bearer(tokens.limited))
    assert default.status_code == 403
    listed = await gw.get("/v1/queues", headers=tokens.bearer(tokens.limited))
    assert [q["queue"] for q in listed.json()["queues"]] == [tokens.queue]
    assert await stored(broker, tokens.queue) == 1
    assert await stored(broker, "gq-other-queue") == 0


async def test_unknown_routes_and_hooks_are_problems(gw: httpx.AsyncClient, tokens: Tokens) -> None:
    missing = await gw.get("/v2/nothing", headers=tokens.bearer(tokens.all))
    assert missing.status_code == 404
    problem(missing)
    hook = await gw.post("/v1/hooks/nobody", json={})
    assert hook.status_code == 404
    assert "nobody" in problem(hook)["detail"]
    wrong = await gw.put("/v1/tasks", headers=tokens.bearer(tokens.all))
    assert wrong.status_code == 405
    problem(wrong)


async def test_nats_down_is_503_with_a_sentence(
    tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERIAC_CONNECT_TIMEOUT", "0.5")
    nowhere = f"nats://127.0.0.1:{free_port()}"
    async for session in _client(nowhere, tokens):
        response = await session.post("/v1/tasks", json={**GOOD, "queue": tokens.queue},
                                      headers=tokens.bearer(tokens.all))  # fmt: skip
        assert response.status_code == 503, response.text
        found = problem(response)
        assert "cannot connect to NATS at" in found["detail"]
        assert "\n" not in found["detail"] and "Traceback" not in found["detail"]
        assert response.headers["retry-after"]
        read = await session.get("/v1/tasks/t1", headers=tokens.bearer(tokens.all))
        assert read.status_code == 503
        health = await session.get("/healthz")
        assert health.status_code == 200
        ready = await session.get("/readyz")
        assert ready.status_code == 503


async def test_the_openapi_document_validates(gw: httpx.AsyncClient) -> None:
    from openapi_spec_validator import validate

    response = await gw.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    paths = document["paths"]
    for path, method in [("/v1/tasks", "post"), ("/v1/tasks:batch", "post"),
                         ("/v1/tasks/{task_id}", "get"), ("/v1/tasks/{task_id}", "delete"),
                         ("/v1/queues", "get"), ("/v1/hooks/{name}", "post"),
                         ("/healthz", "get"), ("/metrics", "get")]:  # fmt: skip
        assert method in paths[path], (path, method)
    schemas = document["components"]["schemas"]
    assert {"TaskRequest", "TaskStatus", "Accepted", "ProblemDocument"} <= set(schemas)
    assert set(schemas["TaskRequest"]["properties"]) >= {
        "task",
        "args",
        "kwargs",
        "queue",
        "countdown",
        "eta",
        "expires",
        "id",
    }
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    wait = paths["/v1/tasks/{task_id}"]["get"]["parameters"]
    assert any(p["name"] == "wait" and p["schema"]["maximum"] == 60 for p in wait)
