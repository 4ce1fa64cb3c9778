"""Signed task messages: the documented test vector, key parsing, and verification tables."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from celeriac.app import Celeriac
from celeriac.dlq import replayable
from celeriac.periodic import catch_up_message, schedule_message, schedule_signature
from celeriac.protocol.envelope import DeadLetter, DeadLetterReason, TaskMessage
from celeriac.protocol.periodic import HDR_PERIODIC, PeriodicTask
from celeriac.protocol.signing import (
    HDR_SIGNATURE,
    Problem,
    SigningKeyError,
    SigningKeys,
    as_keys,
    delivered_id,
    keys_from_env,
    parse_keys,
    read_keys_file,
    signing_input,
)
from celeriac.publishing import task_publication
from celeriac.worker_runtime.decoding import Rejection, decode_task
from celeriac.worker_runtime.verifying import verify

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
OLD = b"o" * 32
NEW = b"n" * 40
BODY = b'{"v":1,"id":"t1","task":"proj.add","queue":"q"}'


def b64(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


def doc_block(marker: str, language: str) -> str:
    found = re.search(rf"<!-- {marker} -->\s*```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"docs/protocol.md lost its {marker} block"
    return found.group(1)


def vector() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(doc_block("signing-vector", "json"))
    return doc


# The documented vector --------------------------------------------------------------------


def test_the_sdk_publishes_exactly_the_documented_vector() -> None:
    v = vector()
    keys = parse_keys(f"{v['key_id']}:{v['secret_base64']}", "vector")
    message = TaskMessage.model_validate_json(v["body"])
    pub = task_publication(message, keys=keys)
    assert pub.subject == v["subject"]
    assert pub.payload == v["body"].encode()
    assert pub.headers == v["headers"]
    digest = signing_input("default", message.id, pub.payload).rsplit(b"\n", 1)[1]
    assert digest.decode() == v["body_sha256"]


def test_the_documented_vector_verifies_and_a_changed_byte_does_not() -> None:
    v = vector()
    keys = parse_keys(f"{v['key_id']}:{v['secret_base64']}", "vector")
    body, header = v["body"].encode(), v["headers"][HDR_SIGNATURE]
    msg_id = v["headers"]["Nats-Msg-Id"]
    assert keys.verify("default", msg_id, body, header) is None
    assert keys.verify("default", msg_id, body.replace(b"[2,3]", b"[2,4]"), header) is not None


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_the_documented_shell_commands_give_the_vector() -> None:
    out = subprocess.run(
        ["bash", "-c", doc_block("signing-shell", "sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.strip() == vector()["headers"][HDR_SIGNATURE]


# Verification tables ----------------------------------------------------------------------


def keys_of(*pairs: tuple[str, bytes]) -> SigningKeys:
    return as_keys(list(pairs), "test")


def sign(keys: SigningKeys, queue: str = "q", msg_id: str = "t1", body: bytes = BODY) -> str:
    return keys.sign(queue, msg_id, body)


OLD_ONLY = keys_of(("old", OLD))
NEW_ONLY = keys_of(("new", NEW))
ROTATING = keys_of(("new", NEW), ("old", OLD))


BAD = Problem.BAD_SIGNATURE
SENT = ("q", "t1", BODY)  # queue, message id and body as signed


@pytest.mark.parametrize(
    ("worker", "header", "received", "expected"),
    [
        # Rotation: either key verifies while both are held.
        (ROTATING, sign(OLD_ONLY), SENT, None),
        (ROTATING, sign(NEW_ONLY), SENT, None),
        (ROTATING, ROTATING.sign(*SENT, every_key=True), SENT, None),
        # A producer signing with both keys reaches workers holding either.
        (OLD_ONLY, ROTATING.sign(*SENT, every_key=True), SENT, None),
        # The removed key is refused, naming the id.
        (NEW_ONLY, sign(OLD_ONLY), SENT, (BAD, "unknown signing key id old")),
        # Tampering with what is covered.
        (ROTATING, sign(OLD_ONLY), ("q", "t1", BODY + b" "), (BAD, "mismatch")),
        (ROTATING, sign(OLD_ONLY), ("q", "t2", BODY), (BAD, "mismatch")),
        (ROTATING, sign(OLD_ONLY), ("other", "t1", BODY), (BAD, "mismatch")),
        # The same key id with another secret.
        (keys_of(("old", NEW)), sign(OLD_ONLY), SENT, (BAD, "mismatch")),
        # No signature at all.
        (ROTATING, None, SENT, (Problem.UNSIGNED, "no Celeriac-Signature")),
        (ROTATING, "  ", SENT, (Problem.UNSIGNED, "no Celeriac-Signature")),
        # Malformed headers.
        (ROTATING, "k1:abc", SENT, (BAD, "malformed")),
        (ROTATING, "v1=old", SENT, (BAD, "malformed")),
        (ROTATING, "v1=old:not base64!", SENT, (BAD, "malformed")),
        (ROTATING, "v1=old:" + b64(b"short"), SENT, (BAD, "malformed")),
        (ROTATING, "v1=b@d:" + b64(b"x" * 32), SENT, (BAD, "malformed")),
        (ROTATING, " ".join([sign(OLD_ONLY)] * 9), SENT, (BAD, "more than 8")),
        (ROTATING, "v1=old:" + "A" * 2000, SENT, (BAD, "longer than")),
        (ROTATING, "v2=old:whatever", SENT, (BAD, "no v1 signature")),
        # A later version next to v1 is skipped, not refused.
        (ROTATING, "v2=x:y " + sign(OLD_ONLY), SENT, None),
    ],
)
def test_verification(
    worker: SigningKeys,
    header: str | None,
    received: tuple[str, str, bytes],
    expected: tuple[Problem, str] | None,
) -> None:
    refusal = worker.verify(*received, header)
    if expected is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert (refusal.problem, expected[1] in refusal.error) == (expected[0], True), refusal


def test_the_first_key_signs() -> None:
    assert ROTATING.sign("q", "t1", BODY).startswith("v1=new:")
    assert " " not in ROTATING.sign("q", "t1", BODY)
    assert ROTATING.sign("q", "t1", BODY, every_key=True).count("v1=") == 2


def test_secrets_stay_out_of_reprs() -> None:
    assert b64(OLD) not in repr(OLD_ONLY) and repr(OLD) not in repr(OLD_ONLY)


# Where a delivery's signed id comes from ----------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Nats-Msg-Id": "abc"}, "abc"),
        # A delayed task, moved by the server without its Nats-Msg-Id.
        ({"Nats-Scheduler": "celeriac.schedules.q.abc"}, "abc"),
        ({"Nats-Scheduler": "celeriac.schedules.other.abc"}, ""),
        ({HDR_PERIODIC: "nightly", "Nats-Msg-Id": "catch-up.x"}, "periodic.nightly"),
        ({}, ""),
    ],
)
def test_delivered_id(headers: dict[str, str], expected: str) -> None:
    assert delivered_id(headers, "q", HDR_PERIODIC) == expected


def test_a_delayed_task_verifies_as_the_server_delivers_it() -> None:
    message = TaskMessage(id="abc", task="proj.add", queue="q")
    pub = task_publication(message, datetime(2030, 1, 1, tzinfo=UTC), OLD_ONLY)
    moved = {
        "Celeriac-Task": "proj.add",
        HDR_SIGNATURE: pub.headers[HDR_SIGNATURE],
        "Nats-Scheduler": pub.subject,
    }
    assert verify(OLD_ONLY, "q", moved, pub.payload) is None


def test_a_fire_verifies_and_cannot_pass_for_a_task() -> None:
    p = PeriodicTask(name="nightly", task="proj.add", queue="q", every=60)
    _, headers, body = schedule_message(p, schedule_signature(p, OLD_ONLY))
    fire = {**headers, "Nats-Schedule-Next": "2030-01-01T00:00:00Z"}
    assert verify(OLD_ONLY, "q", fire, body) is None
    slot = datetime(2030, 1, 1, tzinfo=UTC)
    _, catch_up, catch_up_body = catch_up_message(p, slot, headers[HDR_SIGNATURE])
    assert catch_up_body == body
    assert verify(OLD_ONLY, "q", catch_up, catch_up_body) is None
    # Stripped of Celeriac-Periodic, it is checked under its Nats-Msg-Id: no other id
    # verifies, and under periodic.<name> its body is no task (no task id may take it).
    as_task = {HDR_SIGNATURE: headers[HDR_SIGNATURE], "Nats-Msg-Id": "nightly"}
    refused = verify(OLD_ONLY, "q", as_task, body)
    assert refused is not None and refused.reason is DeadLetterReason.BAD_SIGNATURE
    assert isinstance(decode_task(body), Rejection)
    with pytest.raises(ValueError, match="invalid task id"):
        TaskMessage(id="periodic.nightly", task="proj.add", queue="q")


def test_a_stored_schedule_body_reads_back_to_the_same_bytes() -> None:
    p = PeriodicTask(
        name="nightly", task="proj.add", queue="q", cron="0 3 * * *", args=[1], jitter=5
    )
    assert PeriodicTask.model_validate_json(p.dumps()).dumps() == p.dumps()


def test_a_refusal_names_the_claimed_task_for_the_letter() -> None:
    body = TaskMessage(id="t9", task="proj.add", queue="q").dumps()
    refused = verify(OLD_ONLY, "q", {"Nats-Msg-Id": "t9"}, body)
    assert refused is not None
    assert (refused.reason, refused.task_id, refused.task) == (
        DeadLetterReason.UNSIGNED,
        "t9",
        "proj.add",
    )


def test_unverified_letters_are_not_replayed() -> None:
    body = TaskMessage(id="t9", task="proj.add", queue="q").dumps().decode()
    for reason in (DeadLetterReason.UNSIGNED, DeadLetterReason.BAD_SIGNATURE):
        letter = DeadLetter(
            reason=reason, error="x", queue="q", deliveries=1,
            failed_at=datetime.now(UTC), original=body,
        )  # fmt: skip
        said = replayable(letter, datetime.now(UTC))
        assert isinstance(said, str) and "signature" in said


# Keys from text, the environment and files --------------------------------------------------


def test_keys_from_text() -> None:
    keys = parse_keys(f" k2:{b64(NEW)} ,\nk1:{b64(OLD)}\n", "$X")
    assert keys.key_ids == ("k2", "k1")
    assert keys.keys[1].secret == OLD


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "$CELERIAC_SIGNING_KEYS: no key given"),
        ("k1", "$CELERIAC_SIGNING_KEYS: key 1 is not written <key id>:<base64 secret>"),
        ("k1:@@@", "$CELERIAC_SIGNING_KEYS: the secret of key 'k1' is not base64"),
        (f"k1:{b64(b'x' * 31)}", "the secret of key k1 is 31 bytes; use at least 32"),
        (f"bad id:{b64(OLD)}", "key id 'bad id' must be 1-64 letters"),
        (f"k1:{b64(OLD)},k1:{b64(NEW)}", "key id k1 appears twice"),
    ],
)
def test_malformed_keys_are_one_sentence_naming_the_variable(text: str, words: str) -> None:
    env = {"CELERIAC_SIGNING_KEYS": text or " "}
    if not text:
        with pytest.raises(SigningKeyError, match=re.escape(words)):
            parse_keys(text, "$CELERIAC_SIGNING_KEYS")
        return
    with pytest.raises(SigningKeyError, match=re.escape(words)) as caught:
        keys_from_env(env)
    assert str(caught.value).startswith("$CELERIAC_SIGNING_KEYS")
    assert b64(OLD) not in str(caught.value)


def test_keys_from_env_and_file(tmp_path: Path) -> None:
    assert keys_from_env({}) is None
    path = tmp_path / "keys"
    path.write_text(f"k2:{b64(NEW)}\nk1:{b64(OLD)}\n")
    keys = keys_from_env({"CELERIAC_SIGNING_KEYS_FILE": str(path)})
    assert keys is not None and keys.key_ids == ("k2", "k1")
    assert read_keys_file(path).key_ids == ("k2", "k1")
    with pytest.raises(SigningKeyError, match="not both"):
        keys_from_env({"CELERIAC_SIGNING_KEYS": f"k:{b64(OLD)}", "CELERIAC_SIGNING_KEYS_FILE": "x"})
    missing = str(tmp_path / "missing")
    with pytest.raises(SigningKeyError, match=r"\$CELERIAC_SIGNING_KEYS_FILE .*cannot read it"):
        keys_from_env({"CELERIAC_SIGNING_KEYS_FILE": missing})


def test_the_app_takes_keys_or_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERIAC_SIGNING_KEYS", raising=False)
    monkeypatch.delenv("CELERIAC_SIGNING_KEYS_FILE", raising=False)
    assert Celeriac("plain").signing_keys is None
    given = Celeriac("given", signing_keys=[("k1", OLD)]).signing_keys
    assert given is not None and given.key_ids == ("k1",)
    monkeypatch.setenv("CELERIAC_SIGNING_KEYS", f"k2:{b64(NEW)},k1:{b64(OLD)}")
    from_env = Celeriac("env").signing_keys
    assert from_env is not None and from_env.key_ids == ("k2", "k1")
    with pytest.raises(SigningKeyError, match="signing_keys: the secret of key k1 is 5 bytes"):
        Celeriac("short", signing_keys=[("k1", b"short")])


def test_unsigned_publication_is_unchanged() -> None:
    message = TaskMessage(id="t1", task="proj.add", queue="q")
    assert HDR_SIGNATURE not in task_publication(message).headers
