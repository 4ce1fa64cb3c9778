"""The dashboard's JSON API in process (Starlette over httpx) against a real nats-server:
auth, read-only, the bounded recent-tasks read, task detail, dead letters and replay,
and an outage answered with one sentence; plus its pure parts, table-driven."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from celeriac_devenv.nats import NatsServer

from celeriac.broker import Broker
from celeriac.dashboard.app import build, task_filter
from celeriac.dashboard.auth import COOKIE, authorized, cookie_value
from celeriac.dashboard.kube import pool_row
from celeriac.dashboard.recent import TaskFilter, TaskRow
from celeriac.dashboard.settings import Credentials, SettingsError, settings_from
from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetter, DeadLetterReason, ResultRecord, TaskMessage
from celeriac.protocol.states import TaskState
from tests.support import await_until

TOKEN = "s3cret-token"
JSON = {"Content-Type": "application/json"}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# Pure parts -------------------------------------------------------------------------------

BOTH = Credentials(token=TOKEN, username="ada", password="pw")


@pytest.mark.parametrize(
    ("credentials", "authorization", "cookie", "allowed"),
    [
        (Credentials(), None, None, True),
        (Credentials(token=TOKEN), None, None, False),
        (Credentials(token=TOKEN), f"Bearer {TOKEN}", None, True),
        (Credentials(token=TOKEN), f"bearer {TOKEN}", None, True),
        (Credentials(token=TOKEN), "Bearer wrong", None, False),
        (Credentials(token=TOKEN), f"Basic {TOKEN}", None, False),
        (Credentials(token=TOKEN), None, cookie_value(TOKEN), True),
        (Credentials(token=TOKEN), None, TOKEN, False),  # the cookie holds a digest
        (Credentials(token=TOKEN), None, cookie_value("other"), False),
        (Credentials(username="ada", password="pw"), _basic("ada", "pw"), None, True),
        (Credentials(username="ada", password="pw"), _basic("ada", "no"), None, False),
        (Credentials(username="ada", password="pw"), _basic("eve", "pw"), None, False),
        (Credentials(username="ada", password="pw"), "Basic !!!", None, False),
        (Credentials(username="ada", password="pw"), f"Bearer {TOKEN}", None, False),
        (BOTH, f"Bearer {TOKEN}", None, True),
        (BOTH, _basic("ada", "pw"), None, True),
        (BOTH, None, None, False),
    ],
)
def test_authorized(
    credentials: Credentials, authorization: str | None, cookie: str | None, allowed: bool
) -> None:
    assert authorized(credentials, authorization, cookie) is allowed


OPEN = Credentials()
LOCAL = "127.0.0.1"
BASIC_ENV = {"CELERIAC_DASHBOARD_USERNAME": "u", "CELERIAC_DASHBOARD_PASSWORD": "p"}


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, (LOCAL, 8787, False, OPEN, False)),
        (["--read-only", "--port", "9000"], {}, (LOCAL, 9000, True, OPEN, False)),
        ([], {"CELERIAC_DASHBOARD_READ_ONLY": "1"}, (LOCAL, 8787, True, OPEN, False)),
        ([], {"CELERIAC_DASHBOARD_READ_ONLY": "0"}, (LOCAL, 8787, False, OPEN, False)),
        (["--host", "0.0.0.0"], {}, ("0.0.0.0", 8787, False, OPEN, True)),
        (
            ["--host", "0.0.0.0"],
            {"CELERIAC_DASHBOARD_TOKEN": "t"},
            ("0.0.0.0", 8787, False, Credentials(token="t"), False),
        ),
        ([], BASIC_ENV, (LOCAL, 8787, False, Credentials(username="u", password="p"), False)),
    ],
)
def test_settings(argv: list[str], env: dict[str, str], expected: tuple[Any, ...]) -> None:
    s = settings_from(argv, env)
    assert (s.host, s.port, s.read_only, s.credentials, s.exposed_without_auth) == expected


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"CELERIAC_DASHBOARD_USERNAME": "u"}, "CELERIAC_DASHBOARD_PASSWORD is not set"),
        ({"CELERIAC_DASHBOARD_PASSWORD": "p"}, "CELERIAC_DASHBOARD_USERNAME is not set"),
        ({"CELERIAC_DASHBOARD_USERNAME": "a:b", "CELERIAC_DASHBOARD_PASSWORD": "p"}, "':'"),
    ],
)
def test_settings_refused(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        settings_from([], env)


NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _row(state: TaskState, task: str | None, minutes_ago: int) -> TaskRow:
    record = ResultRecord(state=state, task=task)
    return TaskRow("id", 1, NOW - timedelta(minutes=minutes_ago), record)


@pytest.mark.parametrize(
    ("where", "row", "matches"),
    [
        (TaskFilter(), _row(TaskState.SUCCESS, None, 0), True),
        (TaskFilter(state=TaskState.FAILURE), _row(TaskState.SUCCESS, "a", 0), False),
        (TaskFilter(state=TaskState.FAILURE), _row(TaskState.FAILURE, "a", 0), True),
        (TaskFilter(task="MAIL"), _row(TaskState.SUCCESS, "shop.send_mail", 0), True),
        (TaskFilter(task="mail"), _row(TaskState.SUCCESS, "shop.pay", 0), False),
        (TaskFilter(task="mail"), _row(TaskState.SUCCESS, None, 0), False),
        (TaskFilter(since=NOW - timedelta(minutes=5)), _row(TaskState.SUCCESS, "a", 10), False),
        (TaskFilter(since=NOW - timedelta(minutes=5)), _row(TaskState.SUCCESS, "a", 1), True),
        (TaskFilter(until=NOW - timedelta(minutes=5)), _row(TaskState.SUCCESS, "a", 1), False),
    ],
)
def test_task_filter_matches(where: TaskFilter, row: TaskRow, matches: bool) -> None:
    assert where.matches(row) is matches


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, TaskFilter()),
        ({"state": "failure", "task": " add "}, TaskFilter(state=TaskState.FAILURE, task="add")),
        ({"since": "2026-01-01T12:00:00Z"}, TaskFilter(since=NOW)),
        ({"state": "nope"}, "unknown state 'NOPE'"),
        ({"since": "yesterday"}, "invalid since 'yesterday'"),
        ({"until": "2026-01-01T12:00:00"}, "times need a time zone"),
    ],
)
def test_task_filter_from_query(query: dict[str, str], expected: TaskFilter | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            task_filter(query)
    else:
        assert task_filter(query) == expected


def test_pool_row_reads_the_status_and_survives_a_bad_one() -> None:
    item = {
        "metadata": {"namespace": "shop", "name": "emails"},
        "status": {"backlog": 40, "desiredReplicas": 3, "readyReplicas": 2,
                   "lastScaleReason": "backlog 40 > 10 per replica",
                   "lastScaleTime": "2026-01-01T12:00:00Z"},
    }  # fmt: skip
    assert pool_row(item) == {
        "namespace": "shop", "name": "emails", "backlog": 40, "in_flight": None,
        "desired": 3, "ready": 2, "replicas": None,
        "last_scale_reason": "backlog 40 > 10 per replica",
        "last_scale_time": "2026-01-01T12:00:00Z",
    }  # fmt: skip
    odd = pool_row({"metadata": {"name": "x"}, "status": {"backlog": "lots"}})
    assert (odd["name"], odd["backlog"], odd["desired"]) == ("x", None, None)


# Against a real nats-server -------------------------------------------------------------


@asynccontextmanager
async def dashboard(
    nats_url: str, *, read_only: bool = False, env: Mapping[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The dashboard app in process (with its lifespan), and an HTTP client for it."""
    settings = settings_from(
        ["--nats-url", nats_url, *(["--read-only"] if read_only else [])],
        {"KUBECONFIG": "/nonexistent", **(env or {})},
    )
    app = build(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as http:
            yield http


@pytest.mark.integration
async def test_auth_token_cookie_and_basic(nats_url: str) -> None:
    async with dashboard(nats_url, env={"CELERIAC_DASHBOARD_TOKEN": TOKEN}) as http:
        assert (await http.get("/healthz")).status_code == 200
        for path in ("/", "/api/queues", "/static/app.js"):
            denied = await http.get(path)
            assert denied.status_code == 401, path
        assert (await http.get("/api/queues", headers={"Authorization": "Bearer no"})
                ).status_code == 401  # fmt: skip
        ok = await http.get("/api/queues", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and "queues" in ok.json()
        assert (await http.get("/?token=wrong")).status_code == 401
        login = await http.get("/?token=" + TOKEN)
        assert login.status_code == 303 and login.headers["location"] == "/"
        set_cookie = login.headers["set-cookie"]
        assert "httponly" in set_cookie.lower() and "samesite=strict" in set_cookie.lower()
        assert TOKEN not in set_cookie
        http.cookies.set(COOKIE, cookie_value(TOKEN))
        page = await http.get("/")
        assert page.status_code == 200 and "Celeriac" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (await http.get("/api/config")).json()["read_only"] is False

    env = {"CELERIAC_DASHBOARD_USERNAME": "ada", "CELERIAC_DASHBOARD_PASSWORD": "pw"}
    async with dashboard(nats_url, env=env) as http:
        denied = await http.get("/api/queues")
        assert denied.status_code == 401 and "Basic" in denied.headers["www-authenticate"]
        assert (await http.get("/api/queues", headers={"Authorization": _basic("ada", "pw")})
                ).status_code == 200  # fmt: skip


@pytest.mark.integration
async def test_read_only_refuses_changes(nats_url: str) -> None:
    async with dashboard(nats_url, read_only=True) as http:
        assert (await http.get("/api/config")).json()["read_only"] is True
        for path, body in [
            ("/api/dead-letters/replay", {"ref": "q:1"}),
            ("/api/dead-letters/purge", {"queue": "q"}),
            ("/api/tasks/some-id/revoke", {}),
        ]:
            refused = await http.post(path, json=body)
            assert refused.status_code == 403, path
            assert refused.json() == {"error": "the dashboard is read-only"}
    async with dashboard(nats_url) as http:
        # Not JSON: a form posted from another site cannot change anything.
        form = await http.post("/api/dead-letters/purge", data={"queue": "q"})
        assert form.status_code == 415
        unknown = await http.post("/api/dead-letters/purge", json={"queue": "no-such-queue"})
        assert unknown.status_code == 400 and "no-such-queue" in unknown.json()["error"]


@pytest.mark.integration
async def test_recent_tasks_are_read_backwards_and_bounded(nats_url: str, broker: Broker) -> None:
    prefix = f"dash{uuid.uuid4().hex[:6]}"
    ids = [f"{prefix}-{i:03d}" for i in range(260)]
    for i, task_id in enumerate(ids):
        state = TaskState.FAILURE if i % 10 == 0 else TaskState.SUCCESS
        record = ResultRecord(state=state, task=f"{prefix}.{'bad' if i % 10 == 0 else 'add'}",
                              result=i, error="ValueError: no" if i % 10 == 0 else None,
                              worker="w-1", date_done=datetime.now(UTC))  # fmt: skip
        await broker.results.put(task_id, record)
    # Written again: it moves to the top, and shows once.
    await broker.results.put(ids[5], ResultRecord(state=TaskState.STARTED, task=f"{prefix}.add"))

    async with dashboard(nats_url) as http:
        page = (await http.get("/api/tasks", params={"limit": 10})).json()
        assert [t["id"] for t in page["tasks"]] == [ids[5], *reversed(ids[-9:])]
        assert page["tasks"][0]["state"] == "STARTED"
        assert page["scanned"] <= 11 and page["next_before"] is not None

        older = (await http.get("/api/tasks", params={"limit": 10, "before": page["next_before"]})
                 ).json()  # fmt: skip
        assert [t["id"] for t in older["tasks"]] == list(reversed(ids[-19:-9]))

        # Filtering reads at most 200 records, whatever is asked for.
        failed = (await http.get("/api/tasks", params={"state": "FAILURE", "task": prefix,
                                                       "limit": 200})).json()  # fmt: skip
        assert failed["scanned"] == 200
        expected = [t for i, t in enumerate(ids) if i % 10 == 0][::-1]
        assert [t["id"] for t in failed["tasks"]] == [t for t in expected
                                                     if int(t[-3:]) >= 61]  # fmt: skip
        assert failed["next_before"] is not None

        since = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (await http.get("/api/tasks", params={"since": since})).json()["tasks"] == []

        detail = (await http.get(f"/api/tasks/{ids[10]}")).json()["task"]
        assert (detail["state"], detail["task"], detail["error"]) == (
            "FAILURE",
            f"{prefix}.bad",
            "ValueError: no",
        )
        assert detail["args"] is None and detail["dead_letter"] is None
        assert [step["state"] for step in detail["timeline"]] == ["FAILURE", "FAILURE"]
        missing = await http.get(f"/api/tasks/{prefix}-nope")
        assert missing.status_code == 404 and "nothing stored" in missing.json()["error"]
        bad = await http.get("/api/tasks", params={"before": "x"})
        assert bad.status_code == 400


@pytest.mark.integration
async def test_dead_letter_listed_replayed_and_purged(
    nats_url: str, broker: Broker, queue: str
) -> None:
    await broker.ensure_queue(queue)
    js = broker.js

    async def dead_letter(task_id: str) -> None:
        original = TaskMessage(id=task_id, task="w.gone", args=[1, "<b>x</b>"],
                               kwargs={"k": 2}, queue=queue)  # fmt: skip
        letter = DeadLetter(reason=DeadLetterReason.UNKNOWN_TASK, error="unknown task w.gone",
                            task_id=task_id, task="w.gone", queue=queue, deliveries=1,
                            failed_at=datetime.now(UTC),
                            original=original.dumps().decode())  # fmt: skip
        await js.publish(names.dead_letter_subject(queue), letter.dumps())

    first, second = f"{queue}-a", f"{queue}-b"
    await dead_letter(first)
    await dead_letter(second)
    async with dashboard(nats_url) as http:
        listed = (await http.get("/api/dead-letters", params={"queue": queue})).json()
        assert listed["total"] == 2
        assert [d["task_id"] for d in listed["dead_letters"]] == [second, first]
        assert "original" not in listed["dead_letters"][0]
        [row] = [q for q in (await http.get("/api/queues")).json()["queues"]
                 if q["queue"] == queue]  # fmt: skip
        assert (row["waiting"], row["dead_letters"], row["settled"]) == (0, 2, 0)

        detail = (await http.get(f"/api/tasks/{first}")).json()["task"]
        assert (detail["args"], detail["kwargs"]) == ([1, "<b>x</b>"], {"k": 2})
        assert detail["dead_letter"]["reason"] == "unknown_task"
        assert [s["state"] for s in detail["timeline"]] == ["DEAD-LETTERED"]

        ref = listed["dead_letters"][1]["ref"]
        done = (await http.post("/api/dead-letters/replay", json={"ref": ref})).json()
        assert (done["outcome"], done["task_id"]) == ("replayed", first)
        gone = await http.post("/api/dead-letters/replay", json={"ref": ref})
        assert gone.status_code == 404
        info = await js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
        assert info.num_pending == 1
        msg = await js.get_msg(names.stream_name(queue), subject=names.task_subject(queue))
        assert json.loads(msg.data or b"")["id"] == first

        purged = (await http.post("/api/dead-letters/purge", json={"queue": queue})).json()
        assert purged == {"queue": queue, "purged": 1}
        assert (await http.get("/api/dead-letters", params={"queue": queue})).json()["total"] == 0


@pytest.mark.integration
async def test_an_outage_is_one_sentence_and_the_dashboard_recovers(
    private_nats: NatsServer,
) -> None:
    async with dashboard(private_nats.url) as http:
        assert (await http.get("/api/queues")).status_code == 200
        private_nats.stop()
        down = await await_until(
            lambda: _status(http, "/api/queues", 503), timeout=30, what="a 503 while NATS is down"
        )
        error = down.json()["error"]
        assert "NATS" in error and "Traceback" not in error and "\n" not in error
        assert (await http.get("/healthz")).status_code == 200
        private_nats.start()
        await await_until(
            lambda: _status(http, "/api/queues", 200), timeout=30, what="the API back"
        )


async def _status(http: httpx.AsyncClient, path: str, code: int) -> httpx.Response | None:
    response = await http.get(path)
    return response if response.status_code == code else None
