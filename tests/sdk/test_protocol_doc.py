"""The hand-written example in docs/protocol.md is a valid message, also over the wire."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from celeriac.protocol import names
from celeriac.protocol.envelope import TaskMessage
from celeriac.publishing import task_publication

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def doc_example() -> dict[str, Any]:
    """The JSON block following the ``protocol-example`` marker."""
    text = DOC.read_text()
    found = re.search(r"<!-- protocol-example -->\s*```json\n(.*?)```", text, re.S)
    assert found, "docs/protocol.md lost its protocol-example block"
    example: dict[str, Any] = json.loads(found.group(1))
    return example


def test_doc_example_parses() -> None:
    message = TaskMessage.model_validate(doc_example())
    assert (message.task, message.args, message.queue) == ("proj.tasks.add", [2, 3], "default")
    assert message.expires is not None and message.expires.year == 2099
    assert message.headers["traceparent"].startswith("00-")


def test_doc_names_match_the_code() -> None:
    text = DOC.read_text()
    for name in (
        names.task_subject("emails"),
        names.stream_name("emails"),
        names.dead_letter_stream_name("emails"),
        names.dead_letter_subject("emails"),
        names.RESULTS_BUCKET,
        names.REVOKED_BUCKET,
        names.CHORDS_BUCKET,
        names.CONSUMER_NAME,
        names.HDR_MSG_ID,
        names.HDR_SCHEDULE,
        names.HDR_SCHEDULE_TARGET,
    ):
        assert name in text, name


def test_sdk_publication_matches_the_doc() -> None:
    message = TaskMessage.model_validate(doc_example())
    pub = task_publication(message)
    assert pub.subject == "celeriac.tasks.default"
    assert pub.headers["Nats-Msg-Id"] == message.id


@pytest.mark.integration
async def test_plain_nats_message_is_parsed(raw_nc: Client, queue: str, aapp: Any) -> None:
    """Publish the doc's JSON with plain nats-py (no SDK) and read it back as TaskMessage."""
    await (await aapp.broker()).ensure_queue(queue)  # the queue exists, as under the operator
    body = doc_example()
    body["queue"] = queue
    js = raw_nc.jetstream()
    ack = await js.publish(
        f"celeriac.tasks.{queue}", json.dumps(body).encode(), headers={"Nats-Msg-Id": body["id"]}
    )
    assert ack.stream == names.stream_name(queue)
    sub = await js.pull_subscribe_bind(names.CONSUMER_NAME, names.stream_name(queue))
    (msg,) = await sub.fetch(1, timeout=5)
    await msg.ack()
    message = TaskMessage.model_validate_json(msg.data)
    assert message.id == body["id"] and message.args == [2, 3] and message.queue == queue
