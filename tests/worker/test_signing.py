"""Signed task messages end to end: real nats-server, real ``celeriac worker`` processes.

A worker holding keys runs what its producers signed (now, delayed, a chain's next
step, a periodic schedule's fires) and dead-letters, without running it, a message
that is unsigned, signed with a key it does not hold, or changed after signing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from celeriac import dlq, schedulestore
from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.canvas import chain
from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetterReason, TaskMessage
from celeriac.protocol.periodic import PeriodicTask
from celeriac.protocol.signing import HDR_SIGNATURE, parse_keys
from celeriac.protocol.states import TaskState
from celeriac.publishing import task_publication
from celeriac.schedules import publish_schedule
from tests.support import StartWorker, await_until, read_results, wait_dead_letters

pytestmark = pytest.mark.integration

NEW = "new:" + base64.b64encode(b"N" * 32).decode()
OLD = "old:" + base64.b64encode(b"O" * 32).decode()
# The same key id as NEW, another secret: what a forger guessing the id would use.
FORGED = "new:" + base64.b64encode(b"F" * 32).decode()


@pytest.fixture
async def producers(nats_url: str, queue: str) -> AsyncIterator[dict[str, Celeriac]]:
    """Apps sending to this test's queue: signing with each key, and one unsigned."""
    apps = {
        "new": Celeriac("signed-new", nats_url, default_queue=queue, signing_keys=NEW),
        "old": Celeriac("signed-old", nats_url, default_queue=queue, signing_keys=OLD),
        "forged": Celeriac("forged", nats_url, default_queue=queue, signing_keys=FORGED),
        "unsigned": Celeriac("unsigned", nats_url, default_queue=queue, signing_keys=None),
    }
    apps["unsigned"].signing_keys = None  # whatever the environment of the test run says
    yield apps
    for app in apps.values():
        await app.aclose()


def seq(entry: dlq.DeadLetterEntry) -> int:
    return entry.letter.stream_sequence or 0


def keys_file(tmp_path: Path, *keys: str) -> str:
    path = tmp_path / "signing-keys"
    path.write_text("\n".join(keys) + "\n")
    return str(path)


async def test_signed_tasks_run_and_the_rest_is_dead_lettered_unrun(
    *,
    start_worker: StartWorker,
    producers: dict[str, Celeriac],
    broker: Broker,
    queue: str,
    tmp_path: Path,
) -> None:
    await broker.ensure_queue(queue)
    worker = start_worker(queue, extra=["--signing-keys-file", keys_file(tmp_path, NEW)])
    assert "must be signed with one of the keys new" in worker.log()

    unsigned = await producers["unsigned"].asend_task("w.add", [1, 1])
    wrong_key = await producers["old"].asend_task("w.add", [2, 2])
    forged = await producers["forged"].asend_task("w.add", [3, 3])
    # Signed with the right key, then changed: the args, then the id.
    good = TaskMessage(id="tampered-body", task="w.add", args=[4, 4], queue=queue)
    pub = task_publication(good, keys=parse_keys(NEW, "test"))
    await broker.js.publish(
        pub.subject, pub.payload.replace(b"[4,4]", b"[9,9]"), headers=pub.headers
    )
    moved = TaskMessage(id="moved-id", task="w.add", args=[5, 5], queue=queue)
    pub = task_publication(moved, keys=parse_keys(NEW, "test"))
    await broker.js.publish(
        pub.subject, pub.payload, headers={**pub.headers, "Nats-Msg-Id": "other"}
    )
    await broker.js.publish(
        names.task_subject(queue), moved.dumps(), headers={HDR_SIGNATURE: "v1=new:garbage"}
    )

    signed = await producers["new"].asend_task("w.add", [20, 22])
    delayed = await producers["new"].asend_task("w.add", [1, 2], countdown=1)
    assert await signed.aget(timeout=30) == 42
    assert await delayed.aget(timeout=30) == 3

    letters = await wait_dead_letters(broker, queue, 6)
    said = {letter.task_id: (letter.reason, letter.error) for letter in letters}
    bad = DeadLetterReason.BAD_SIGNATURE
    assert said[unsigned.id] == (DeadLetterReason.UNSIGNED, "no Celeriac-Signature header")
    assert said[wrong_key.id][0] is bad
    assert said[wrong_key.id][1].startswith("unknown signing key id old")
    assert said[forged.id][0] is bad and "signature mismatch for key new" in said[forged.id][1]
    assert said["tampered-body"][0] is bad and "mismatch" in said["tampered-body"][1]
    moved_letters = [letter for letter in letters if letter.task_id == "moved-id"]
    assert sorted(letter.error.split(":")[0] for letter in moved_letters) == [
        "malformed Celeriac-Signature header",
        "signature mismatch for key new",
    ]
    assert all(letter.task == "w.add" for letter in letters)
    # Never run: no result under any of their ids (a run writes one: w.add keeps results).
    refused = [unsigned.id, wrong_key.id, forged.id, "tampered-body", "moved-id"]
    assert await read_results(broker.js, refused) == {}
    assert "dead-lettering a unsigned message" in worker.log()


async def test_a_chain_step_and_periodic_fires_are_signed_by_who_publishes_them(
    *,
    start_worker: StartWorker,
    producers: dict[str, Celeriac],
    broker: Broker,
    queue: str,
) -> None:
    await broker.ensure_queue(queue)
    start_worker(queue, env={"CELERIAC_SIGNING_KEYS": NEW})
    app = producers["new"]
    flow = chain(app.signature("w.add", (1, 2)), app.signature("w.add", (10,)))
    assert await (await flow.aapply_async()).aget(timeout=30) == 13

    signed_broker = await app.broker()
    nightly = PeriodicTask(name="signed-every", task="w.add", args=[2, 3], queue=queue, every=1)
    await publish_schedule(signed_broker, nightly)
    try:
        stored = await schedulestore.find_schedule(broker.js, nightly.name, queue)
        assert stored.signature is not None and stored.signature.startswith("v1=new:")

        async def a_run_succeeded() -> bool:
            kv = await broker.results.kv()
            listed = await broker.js.stream_info(
                f"KV_{names.RESULTS_BUCKET}", f"$KV.{names.RESULTS_BUCKET}.{nightly.name}.*"
            )
            for subject in listed.state.subjects or {}:
                entry = await kv.get(subject.split(".", 2)[2])
                if entry.value and json.loads(entry.value)["state"] == TaskState.SUCCESS:
                    return True
            return False

        await await_until(a_run_succeeded, timeout=30, what="a run of the signed schedule")
    finally:
        await schedulestore.delete_schedule(broker.js, queue, nightly.name)
    info = await broker.js.stream_info(names.dead_letter_stream_name(queue))
    assert info.state.messages == 0


async def test_rotation_loses_nothing(
    *,
    start_worker: StartWorker,
    producers: dict[str, Celeriac],
    broker: Broker,
    queue: str,
    tmp_path: Path,
) -> None:
    await broker.ensure_queue(queue)
    # Workers first learn the new key next to the old one...
    start_worker(queue, env={"CELERIAC_SIGNING_KEYS_FILE": keys_file(tmp_path, NEW, OLD)})
    # ...while producers still sign with the old one, then move to the new one.
    before = [await producers["old"].asend_task("w.add", [i, 1]) for i in range(20)]
    after = [await producers["new"].asend_task("w.add", [i, 2]) for i in range(20)]
    for i, result in enumerate(before):
        assert await result.aget(timeout=30) == i + 1
    for i, result in enumerate(after):
        assert await result.aget(timeout=30) == i + 2
    info = await broker.js.stream_info(names.dead_letter_stream_name(queue))
    assert info.state.messages == 0


async def test_a_replay_is_signed_anew_by_the_replayer(
    *,
    start_worker: StartWorker,
    producers: dict[str, Celeriac],
    broker: Broker,
    queue: str,
) -> None:
    await broker.ensure_queue(queue)
    start_worker(queue, env={"CELERIAC_SIGNING_KEYS": NEW})
    await producers["new"].asend_task("w.not_registered", [1])
    [first] = await only_letter(broker, queue, after=0)
    assert first.letter.reason is DeadLetterReason.UNKNOWN_TASK
    # Replayed by someone holding the key: it verifies, and fails for its old reason.
    [done] = await dlq.replay(broker.js, [first], keys=parse_keys(NEW, "test"))
    assert done.outcome is dlq.ReplayOutcome.REPLAYED
    [second] = await only_letter(broker, queue, after=seq(first))
    assert second.letter.reason is DeadLetterReason.UNKNOWN_TASK
    signature = second.letter.original_headers[HDR_SIGNATURE]
    assert signature.startswith("v1=new:")
    assert signature != first.letter.original_headers[HDR_SIGNATURE]  # a new message id
    # Replayed without a key: the old signature is not carried over, so it is unsigned.
    await dlq.replay(broker.js, [second])
    [third] = await only_letter(broker, queue, after=seq(second))
    assert third.letter.reason is DeadLetterReason.UNSIGNED
    assert HDR_SIGNATURE not in third.letter.original_headers
    said = dlq.replayable(third.letter, third.letter.failed_at)
    assert isinstance(said, str) and "signature did not verify" in said


async def only_letter(broker: Broker, queue: str, *, after: int) -> list[dlq.DeadLetterEntry]:
    """The queue's one letter, once it is that of a message later in the work stream
    than sequence ``after`` (a replay is a new message)."""

    async def found() -> list[dlq.DeadLetterEntry] | None:
        entries = await dlq.list_dead_letters(broker.js, queue)
        if len(entries) == 1 and (entries[0].letter.stream_sequence or 0) > after:
            return entries
        return None

    return await await_until(found, timeout=15, what=f"a letter of a message after {after}")


def test_a_malformed_key_stops_the_worker_with_one_sentence(
    start_worker: StartWorker, queue: str
) -> None:
    worker = start_worker(queue, env={"CELERIAC_SIGNING_KEYS": "k1:c2hvcnQ="}, wait=False)
    assert worker.wait_exit(30) == 2
    log = worker.log()
    assert "$CELERIAC_SIGNING_KEYS: the secret of key k1 is 5 bytes; use at least 32" in log
    assert "Traceback" not in log
