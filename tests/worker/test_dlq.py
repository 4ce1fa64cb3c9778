"""``celeriac dlq list | show | replay | purge`` against a real NATS and a real worker.

Dead letters are made the way they happen: a task name no worker knows, a task that
fails past its retries, a message that is not JSON, one too large to keep whole. The
commands run as a user runs them (a subprocess); mistakes are one plain sentence.
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from celeriac import dlq
from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.exceptions import TaskError
from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetter, DeadLetterReason, TaskMessage
from celeriac.worker_runtime.deadletters import letter_id, publish_dead_letter
from tests.support import (
    WORKER_APPS,
    StartWorker,
    WorkerApp,
    await_until,
    dead_letters,
    wait_dead_letters,
)
from tests.worker.test_admin import celeriac, ok

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_app() -> WorkerApp:
    """Workers here run ``dlqtasks``: tasks that wait on files the tests create."""
    return WorkerApp("dlqtasks", WORKER_APPS)


async def listed(nats_url: str, *argv: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        await ok("dlq", "list", "-o", "json", *argv, nats_url=nats_url)
    )
    return found


async def test_dead_letters_listed_shown_replayed_and_purged(
    *,
    start_worker: StartWorker,
    client: Celeriac,
    broker: Broker,
    queue: str,
    nats_url: str,
    tmp_path: Path,
) -> None:
    await broker.ensure_queue(queue)
    worker = start_worker(queue)
    unknown = await client.asend_task("d.nope", [1], queue=queue)
    await wait_dead_letters(broker, queue, 1)
    flag = tmp_path / "fixed"
    failing = await client.asend_task("d.until_file", [str(flag)], queue=queue)
    with pytest.raises(TaskError, match="does not exist yet"):
        await failing.aget(timeout=30)
    await broker.js.publish(names.task_subject(queue), b"not json at all")
    await wait_dead_letters(broker, queue, 3)
    # Too large to keep whole in a letter: only a prefix, its size and SHA-256 are kept.
    pad = "x" * (broker.nc.max_payload - 2000)
    huge = await client.asend_task("d.nope", kwargs={"pad": pad}, queue=queue)
    await wait_dead_letters(broker, queue, 4)

    every = await listed(nats_url, "-Q", queue)
    assert [(e["task"], e["reason"]) for e in every] == [
        ("d.nope", "unknown_task"),  # the huge one, newest first
        (None, "malformed"),
        ("d.until_file", "max_retries"),
        ("d.nope", "unknown_task"),
    ]
    assert [e["task_id"] for e in every if e["task"]] == [huge.id, failing.id, unknown.id]
    assert every[0]["original_truncated"] is True
    assert all(e["ref"] == f"{queue}:{e['sequence']}" for e in every)
    assert [e["ref"] for e in await listed(nats_url, "-Q", queue, "--limit", "2")] == [
        e["ref"] for e in every[:2]
    ]
    by_reason = await listed(nats_url, "-Q", queue, "--reason", "max_retries")
    assert [e["task_id"] for e in by_reason] == [failing.id]
    by_task = await listed(nats_url, "-Q", queue, "--task", "d.nope")
    assert [e["task_id"] for e in by_task] == [huge.id, unknown.id]
    # Without -Q: every queue's letters, ours among them.
    assert {e["ref"] for e in every} <= {e["ref"] for e in await listed(nats_url)}
    text = await ok("dlq", "list", "-Q", queue, nats_url=nats_url)
    assert "Dead letters (4)" in text and every[2]["ref"] in text and "max_retries" in text

    failed_ref = every[2]["ref"]
    shown = await ok("dlq", "show", failed_ref, nats_url=nats_url)
    assert shown.startswith(f"{failed_ref}: max_retries")
    assert "RuntimeError" in shown and "Traceback" in shown
    assert '\n  "task": "d.until_file",' in shown  # the original, pretty-printed
    as_json = json.loads(await ok("dlq", "show", failing.id, "-o", "json", nats_url=nats_url))
    assert (as_json["ref"], as_json["deliveries"]) == (failed_ref, 2)

    # A dry run says what it would do and changes nothing.
    dry = await ok("dlq", "replay", "-Q", queue, "--dry-run", nats_url=nats_url)
    lines = dry.splitlines()
    assert f"would replay {failed_ref} (d.until_file, id {failing.id})" in lines
    assert f"would replay {every[3]['ref']} (d.nope, id {unknown.id})" in lines
    assert any(
        line.startswith(f"skipped {every[1]['ref']} (-): ") and "not a valid task message" in line
        for line in lines
    ), dry
    assert any(line.startswith(f"skipped {every[0]['ref']} (d.nope") and "truncated" in line
               for line in lines), dry  # fmt: skip
    assert lines[-1] == "2 would replay, 2 skipped"
    assert [e["ref"] for e in await listed(nats_url, "-Q", queue)] == [e["ref"] for e in every]

    # Fixed: the replayed task runs again under its id, within the duplicate window,
    # and a fresh wait sees the new outcome instead of the stored FAILURE. No worker
    # runs meanwhile, so the reset to PENDING is seen before the new run.
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0
    flag.touch()
    replayed = await ok("dlq", "replay", failed_ref, nats_url=nats_url)
    assert replayed.splitlines() == [
        f"replayed {failed_ref} (d.until_file, id {failing.id})",
        "1 replayed, 0 skipped",
    ]
    shown_result = json.loads(await ok("result", failing.id, "-o", "json", nats_url=nats_url))
    assert shown_result["state"] == "PENDING"
    start_worker(queue)
    assert await client.AsyncResult(failing.id).aget(timeout=30) == "ok"
    left = await listed(nats_url, "-Q", queue)
    assert failed_ref not in {e["ref"] for e in left} and len(left) == 3

    # What cannot help is skipped, and the letters stay.
    skipped = await ok("dlq", "replay", every[0]["ref"], every[1]["ref"], nats_url=nats_url)
    assert skipped.splitlines()[-1] == "0 replayed, 2 skipped"
    assert len(await listed(nats_url, "-Q", queue)) == 3

    # Purging asks first; "n" keeps them.
    kept = await celeriac("dlq", "purge", "-Q", queue, nats_url=nats_url, stdin="n\n")
    assert kept.returncode == 1 and "aborted" in kept.stderr
    assert f"purged 3 dead letter(s) from queue {queue}" in await ok(
        "dlq", "purge", "-Q", queue, "--yes", nats_url=nats_url
    )
    assert await listed(nats_url, "-Q", queue) == []
    assert await ok("dlq", "replay", "-Q", queue, "--yes", nats_url=nats_url) == (
        "no dead letters to replay\n"
    )


async def test_replaying_the_filtered_set_asks_first(
    start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str, nats_url: str
) -> None:
    await broker.ensure_queue(queue)
    sent = [await client.asend_task("d.later", [i], queue=queue) for i in range(3)]
    start_worker(queue)
    await wait_dead_letters(broker, queue, 3)
    refused = await celeriac("dlq", "replay", "-Q", queue, nats_url=nats_url, stdin="n\n")
    assert refused.returncode == 1 and "aborted" in refused.stderr
    assert len(await listed(nats_url, "-Q", queue)) == 3

    # Each replay is dead-lettered again (no worker knows d.later), not dropped as a
    # duplicate of the original message id.
    out = await ok("dlq", "replay", "-Q", queue, "--reason", "unknown_task", "--yes",
                   nats_url=nats_url)  # fmt: skip
    assert out.splitlines()[-1] == "3 replayed, 0 skipped"

    async def again() -> list[dict[str, Any]] | None:
        found = await listed(nats_url, "-Q", queue)
        return found if len(found) == 3 else None

    found = await await_until(again, timeout=30, what="the replays dead-lettered again")
    assert {e["task_id"] for e in found} == {r.id for r in sent}
    assert all(e["original_headers"][dlq.HDR_REPLAY_OF].startswith(f"{queue}:") for e in found)


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (("dlq", "list", "-Q", "no-such-queue"), "unknown queue 'no-such-queue'"),
        (("dlq", "show", "no-such-queue:1"), "unknown queue 'no-such-queue'"),
        (("dlq", "show", "not a ref"), "no dead letter 'not a ref'"),
        (("dlq", "replay", "no-such-task-id"), "no dead letter 'no-such-task-id'"),
        (("dlq", "purge", "-Q", "no-such-queue", "--yes"), "unknown queue 'no-such-queue'"),
        (("dlq", "list", "-Q", "Bad Queue"), "invalid queue name"),
    ],
)
async def test_mistakes_are_one_sentence(
    nats_url: str, argv: tuple[str, ...], sentence: str
) -> None:
    done = await celeriac(*argv, nats_url=nats_url)
    assert done.returncode == 1, done
    assert done.stderr.startswith("celeriac: ") and sentence in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


async def test_a_bad_ref_in_a_known_queue_is_one_sentence(
    broker: Broker, queue: str, nats_url: str
) -> None:
    await broker.ensure_queue(queue)
    done = await celeriac("dlq", "show", f"{queue}:99", nats_url=nats_url)
    sentence = f"celeriac: no dead letter '{queue}:99' (give QUEUE:SEQUENCE or a task id)\n"
    assert (done.returncode, done.stderr) == (1, sentence)


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (("dlq", "list", "--reason", "bored"), "'unknown_task'"),
        (("dlq", "replay", "q:1", "-Q", "q"), "give dead-letter refs or filters"),
    ],
)
async def test_usage_mistakes_are_one_sentence(
    nats_url: str, argv: tuple[str, ...], sentence: str
) -> None:
    done = await celeriac(*argv, nats_url=nats_url)
    assert done.returncode == 2 and sentence in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


async def test_an_unreachable_server_is_one_sentence() -> None:
    done = await celeriac("dlq", "list", nats_url="nats://127.0.0.1:9")
    assert done.returncode == 1
    assert done.stderr.startswith("celeriac: cannot connect to NATS at nats://127.0.0.1:9")
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _letter(reason: DeadLetterReason, original: str, **fields: Any) -> DeadLetter:
    return DeadLetter(reason=reason, error="e", queue="q", deliveries=1, failed_at=NOW,
                      original=original, **fields)  # fmt: skip


def _task(**fields: Any) -> str:
    return TaskMessage(id="t1", task="x.y", queue="q", **fields).dumps().decode()


@pytest.mark.parametrize(
    ("letter", "why"),
    [
        (_letter(DeadLetterReason.MAX_RETRIES, _task()), None),
        (_letter(DeadLetterReason.UNKNOWN_TASK, _task(expires=NOW + timedelta(seconds=1))), None),
        (_letter(DeadLetterReason.MAX_RETRIES, _task(), original_truncated=True), "truncated"),
        (_letter(DeadLetterReason.MALFORMED, _task()), "not a valid task message"),
        (_letter(DeadLetterReason.UNSUPPORTED_VERSION, '{"v": 2}'), "protocol version"),
        (_letter(DeadLetterReason.POISON, "{}"), "not a valid task message"),
        (_letter(DeadLetterReason.MAX_RETRIES, _task(expires=NOW)), "expired at"),
    ],
)
def test_what_a_replay_can_help(letter: DeadLetter, why: str | None) -> None:
    checked = dlq.replayable(letter, NOW)
    if why is None:
        assert isinstance(checked, TaskMessage) and checked.id == "t1"
    else:
        assert isinstance(checked, str) and why in checked


async def test_an_errback_that_cannot_be_sent_is_logged_and_the_task_dead_lettered_once(
    start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str, tmp_path: Path
) -> None:
    # A worker that declares nothing, and an errback for a queue that does not exist:
    # sending it fails the same way every time, so it is logged and the message ends.
    await broker.ensure_queue(queue)
    await broker.results.kv()  # the buckets it reads, as the operator would make them
    await broker.revocations.kv()
    worker = start_worker(queue, env={"CELERIAC_DECLARE_QUEUES": "0"})
    errback = client.signature("d.add", [1], queue=f"{queue}-gone")
    failing = client.signature("d.until_file", [str(tmp_path / "never")], queue=queue)
    result = await failing.aapply_async(link_error=errback)
    with pytest.raises(TaskError, match="does not exist yet"):
        await result.aget(timeout=30)
    await await_until(
        lambda: f"not sent: queue '{queue}-gone' does not exist" in worker.log(),
        timeout=15, what="the errback's error in the log",
    )  # fmt: skip

    async def settled() -> bool:
        info = await broker.js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await await_until(settled, timeout=15, what="the message to be terminated")
    [letter] = await dead_letters(broker, queue)
    assert letter.reason is DeadLetterReason.MAX_RETRIES and letter.task_id == result.id


async def test_a_repeated_dead_letter_is_stored_once(broker: Broker, queue: str) -> None:
    # A worker settling a message again publishes its letter again: the stream keeps one.
    await broker.ensure_queue(queue)
    letter = DeadLetter(
        reason=DeadLetterReason.MAX_RETRIES, error="ValueError: bad", task_id="t-1",
        task="d.add", queue=queue, deliveries=1, stream_sequence=7,
        failed_at=datetime.now(UTC), original="{}",
    )  # fmt: skip
    await publish_dead_letter(broker, letter)
    await publish_dead_letter(broker, letter.model_copy(update={"deliveries": 2}))
    assert letter_id(letter) == f"dead.{queue}.7.max_retries.t-1"
    # Another message, or the same one for another reason, is a letter of its own.
    await publish_dead_letter(broker, letter.model_copy(update={"stream_sequence": 8}))
    await publish_dead_letter(broker, letter.model_copy(update={"reason": DeadLetterReason.POISON}))
    letters = await dead_letters(broker, queue)
    stored = [(d.stream_sequence, d.reason.value, d.deliveries) for d in letters]
    assert stored == [(7, "max_retries", 1), (8, "max_retries", 1), (7, "poison", 1)]
