"""The dashboard in a real browser: a nats-server, a ``celeriac worker`` and ``celeriac
dashboard`` as subprocesses, and headless Chromium (Debian's, driven by playwright)
checking that the page shows the known state, that Replay re-enqueues a dead letter,
and that read-only hides it. Saves the screenshot in docs/images/dashboard.png."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetter, DeadLetterReason, TaskMessage
from celeriac.protocol.workers import WORKER_NAME_ENV
from tests.dashboard.conftest import Dashboard, StartDashboard
from tests.support import StartWorker, await_until, wait_dead_letters

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# The docs' screenshot is rewritten only on request, so a test run leaves the tree as it was.
DOCS_SCREENSHOT = REPO / "docs" / "images" / "dashboard.png"
UPDATE_SCREENSHOT_ENV = "CELERIAC_UPDATE_SCREENSHOT"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 20_000  # for the page to show what the API has (it polls every 2 s)
SUCCESSES = 5
# Rendered as text it reads as itself; as markup it would add an element and run code.
HOSTILE = "<img src=x onerror=\"document.title='owned'\">"


@pytest.fixture
def chromium() -> Path:
    """The system's Chromium; the test is skipped where it is not installed (never in CI,
    where scripts/setup.sh installs it)."""
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is absent: install Debian's chromium (scripts/setup.sh does)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Any]:
    """Headless Chromium from the system's package (never a downloaded browser)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


def _json(dashboard: Dashboard, path: str, token: str) -> Any:
    status, body = dashboard.request(path, headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body
    return json.loads(body)


async def test_the_page_shows_the_state_and_replays_a_dead_letter(
    *,
    browser: Any,
    start_worker: StartWorker,
    start_dashboard: StartDashboard,
    client: Celeriac,
    broker: Broker,
    queue: str,
    tmp_path: Path,
) -> None:
    """Set CELERIAC_UPDATE_SCREENSHOT=1 to refresh docs/images/dashboard.png from this run."""
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    idle = f"{queue}-idle"  # no worker: its tasks stay waiting
    await broker.ensure_queue(queue)
    await broker.ensure_queue(idle)
    for i in range(3):
        await client.asend_task("w.add", [i, i], queue=idle)
    worker_name = f"dash-{uuid.uuid4().hex[:6]}"
    worker = start_worker(queue, concurrency=2, env={WORKER_NAME_ENV: worker_name})
    done = [await client.asend_task("w.add", [20, i], queue=queue) for i in range(SUCCESSES)]
    assert [await r.aget(timeout=30) for r in done] == [20 + i for i in range(SUCCESSES)]
    lost = await client.asend_task("shop.resize_image", ["photo.jpg"], {"width": 640},
                                   queue=queue)  # fmt: skip
    [letter] = await wait_dead_letters(broker, queue, 1)
    assert (letter.task_id, letter.reason) == (lost.id, DeadLetterReason.UNKNOWN_TASK)

    token = uuid.uuid4().hex
    dashboard = start_dashboard(env={"CELERIAC_DASHBOARD_TOKEN": token})
    assert dashboard.request("/api/queues")[0] == 401
    assert dashboard.request("/")[0] == 401
    assert dashboard.request("/healthz")[0] == 200
    [ours] = [q for q in _json(dashboard, "/api/queues", token)["queues"] if q["queue"] == queue]
    assert (ours["waiting"], ours["in_flight"], ours["dead_letters"]) == (0, 0, 1)

    page = await browser.new_page(viewport={"width": 1440, "height": 1100})
    page.set_default_timeout(WAIT_MS)
    await page.goto(f"{dashboard.url}?token={token}")
    assert page.url == dashboard.url  # the token left the address bar for a cookie

    queue_row = page.locator(f'#queue-rows tr[data-queue="{queue}"]')
    await expect(queue_row.locator('[data-field="waiting"]')).to_have_text("0")
    await expect(queue_row.locator('[data-field="in_flight"]')).to_have_text("0")
    await expect(queue_row.locator('[data-field="dead_letters"]')).to_have_text("1")
    idle_row = page.locator(f'#queue-rows tr[data-queue="{idle}"]')
    await expect(idle_row.locator('[data-field="waiting"]')).to_have_text("3")
    await expect(page.locator(f'#worker-rows tr[data-worker="{worker_name}"]')).to_contain_text(
        queue
    )

    letter_row = page.locator(f'#dead-letter-rows tr[data-ref="{queue}:1"]')
    await expect(letter_row).to_contain_text("shop.resize_image")
    await expect(letter_row).to_contain_text(lost.id)
    await expect(letter_row).to_contain_text("unknown_task")
    await expect(letter_row.get_by_role("button", name="Replay")).to_be_visible()

    # A task's detail, from the recent tasks list.
    await page.locator(f'#task-rows tr[data-task="{done[2].id}"]').click()
    fields = page.locator("#detail-fields")
    await expect(page.locator("#detail-id")).to_have_text(done[2].id)
    await expect(fields.locator('[data-field="state"]')).to_have_text("SUCCESS")
    await expect(fields.locator('[data-field="task"]')).to_have_text("w.add")
    await expect(fields.locator('[data-field="worker"]')).to_have_text(worker_name)
    await expect(page.locator("#detail-outcome pre")).to_have_text("22")
    await expect(page.locator("#detail-timeline li").first).to_contain_text("SUCCESS")
    # The dead letter's detail has the call it kept.
    await letter_row.locator("td").nth(2).click()
    await expect(page.locator("#detail-id")).to_have_text(lost.id)
    await expect(fields.locator('[data-field="args"]')).to_contain_text('"photo.jpg"')
    await expect(fields.locator('[data-field="kwargs"]')).to_contain_text('"width": 640')

    # Filters: SUCCESS and the name find the successes; REVOKED finds none of them.
    await page.select_option('#task-filters select[name="state"]', "SUCCESS")
    await page.fill('#task-filters input[name="task"]', "w.add")
    await page.click('#task-filters button[type="submit"]')
    await expect(page.locator(f'#task-rows tr[data-task="{done[0].id}"]')).to_be_visible()
    await page.select_option('#task-filters select[name="state"]', "REVOKED")
    await page.click('#task-filters button[type="submit"]')
    await expect(page.locator(f'#task-rows tr[data-task="{done[0].id}"]')).to_have_count(0)

    # A few polls make the chart's lines, then the picture for the docs.
    four_or_more = re.compile(r"^([4-9]|[1-9][0-9]+)$")
    await expect(page.locator("#backlog-chart")).to_have_attribute("data-points", four_or_more)
    await page.select_option('#task-filters select[name="state"]', "")
    await page.fill('#task-filters input[name="task"]', "")
    await page.click('#task-filters button[type="submit"]')
    await page.locator(f'#task-rows tr[data-task="{done[2].id}"]').click()
    await expect(page.locator("#detail-id")).to_have_text(done[2].id)
    shot = DOCS_SCREENSHOT if os.environ.get(UPDATE_SCREENSHOT_ENV) else tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not an empty image

    # What a task is called is shown as text, never run as markup.
    await client.asend_task(HOSTILE, queue=queue)
    await wait_dead_letters(broker, queue, 2)
    hostile_row = page.locator(f'#dead-letter-rows tr[data-ref="{queue}:2"]')
    await expect(hostile_row.locator("td").nth(1)).to_have_text(HOSTILE)
    assert await page.locator("#dead-letter-rows img").count() == 0
    assert await page.title() == "Celeriac dashboard"

    # Replay with no worker left: the task waits on its queue again.
    await asyncio.to_thread(worker.process.stop, 5)
    await expect(page.locator(f'#worker-rows tr[data-worker="{worker_name}"]')).to_have_count(0)
    await letter_row.get_by_role("button", name="Replay").click()
    await expect(letter_row).to_have_count(0)
    await expect(page.locator("#banner")).to_be_hidden()
    await expect(queue_row.locator('[data-field="dead_letters"]')).to_have_text("1")

    # Waiting, or handed to a pull request the stopped worker left on the server.
    async def requeued() -> dict[str, Any] | None:
        [row] = [q for q in _json(dashboard, "/api/queues", token)["queues"] if q["queue"] == queue]
        return row if row["waiting"] + row["in_flight"] == 1 else None

    counts = await await_until(requeued, timeout=20, what="the replayed task on its queue")
    for field in ("waiting", "in_flight"):
        await expect(queue_row.locator(f'[data-field="{field}"]')).to_have_text(str(counts[field]))
    msg = await broker.js.get_msg(names.stream_name(queue), subject=names.task_subject(queue))
    replayed = TaskMessage.model_validate_json(msg.data or b"")
    assert (replayed.id, replayed.task, replayed.args) == (lost.id, "shop.resize_image",
                                                           ["photo.jpg"])  # fmt: skip
    await page.close()


async def test_read_only_hides_replay_and_refuses_it(
    browser: Any, start_dashboard: StartDashboard, broker: Broker, queue: str
) -> None:
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    await broker.ensure_queue(queue)
    task_id = f"{queue}-lost"
    original = TaskMessage(id=task_id, task="shop.gone", queue=queue)
    letter = DeadLetter(
        reason=DeadLetterReason.UNKNOWN_TASK, error="unknown task shop.gone", task_id=task_id,
        task="shop.gone", queue=queue, deliveries=1, failed_at=datetime.now(UTC),
        original=original.dumps().decode(),
    )  # fmt: skip
    await broker.js.publish(names.dead_letter_subject(queue), letter.dumps())

    dashboard = start_dashboard(env={"CELERIAC_DASHBOARD_READ_ONLY": "1"})
    page = await browser.new_page()
    page.set_default_timeout(WAIT_MS)
    await page.goto(dashboard.url)
    row = page.locator(f'#dead-letter-rows tr[data-ref="{queue}:1"]')
    await expect(row).to_contain_text("shop.gone")
    await expect(page.locator("#read-only")).to_be_visible()
    assert await row.locator("button").count() == 0
    assert await page.locator("#purge-buttons button").count() == 0

    body = json.dumps({"ref": f"{queue}:1"}).encode()
    status, answer = dashboard.request(
        "/api/dead-letters/replay", method="POST", body=body,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 403 and "read-only" in answer

    listed = json.loads(dashboard.request(f"/api/dead-letters?queue={queue}")[1])
    assert listed["total"] == 1
    await page.close()
