"""The gateway's pure parts: the tokens document, settings, field names, hook ids."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from celeriac.gateway.access import AccessError, parse
from celeriac.gateway.app import hook_task_id
from celeriac.gateway.problems import location
from celeriac.gateway.settings import SettingsError, settings_from

TOKEN, OTHER = "a" * 24, "b" * 24
SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
HOOK = {"task": "hooks.receive", "queue": "hooks", "secret": SECRET}


def test_a_token_is_found_by_its_digest_and_allows_its_queues() -> None:
    access = parse(json.dumps({"tokens": {TOKEN: ["emails", "reports"], OTHER: "*"}}), "doc")
    mine = access.grant(TOKEN)
    assert mine is not None and mine.allows("emails") and not mine.allows("billing")
    every = access.grant(OTHER)
    assert every is not None and every.allows("billing")
    assert access.grant("c" * 24) is None
    # Only digests are kept.
    assert TOKEN not in repr(access) and TOKEN.encode() not in b"".join(d for d, _ in access.grants)


def test_yaml_works_as_json_does() -> None:
    access = parse(f"tokens:\n  {TOKEN}: [emails]\nhooks:\n  shop: {json.dumps(HOOK)}\n", "doc")
    assert access.hooks["shop"].task == "hooks.receive" and access.grant(TOKEN) is not None


BAD_DOCUMENTS = [
    ("tokens: [", "neither YAML nor JSON"),
    ("[1, 2]", "expected a mapping"),
    (json.dumps({"token": {}}), "unknown key(s) token"),
    (json.dumps({"tokens": {"short": "*"}}), "16 characters or more"),
    (json.dumps({"tokens": {TOKEN: []}}), "no queues"),
    (json.dumps({"tokens": {TOKEN: ["not a queue"]}}), "'not a queue' is not a queue name"),
    (json.dumps({"tokens": {TOKEN: 5}}), "expected a list of queue names"),
    (json.dumps({"tokens": {TOKEN: [{"queue": "a"}]}}), "{'queue': 'a'} is not a queue name"),
    (json.dumps({"hooks": {"h": {**HOOK, "secret": "plain"}}}), "hooks.h.secret: not a Standard"),
    (json.dumps({"hooks": {"h": {**HOOK, "scheme": "github"}}}), "only 'standard-webhooks'"),
    (json.dumps({"hooks": {"h": {"task": "t", "secret": SECRET}}}), "hooks.h.queue: expected"),
    (json.dumps({"hooks": {"h": {**HOOK, "headers": "X-A"}}}), "hooks.h.headers"),
    (json.dumps({"hooks": {"h": {**HOOK, "extra": 1}}}), "hooks.h: unknown key(s) extra"),
]


@pytest.mark.parametrize("case", BAD_DOCUMENTS, ids=[c[1] for c in BAD_DOCUMENTS])
def test_a_bad_document_is_one_sentence_naming_the_place(case: tuple[str, str]) -> None:
    text, message = case
    with pytest.raises(AccessError) as caught:
        parse(text, "tokens.yaml")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_settings_come_from_arguments_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": {TOKEN: "*"}}))
    env = {"CELERIAC_GATEWAY_TOKENS_FILE": str(path), "CELERIAC_NATS_URL": "nats://n:4222"}
    settings = settings_from(["--max-body", "256KiB", "--port", "0"], env)
    assert (settings.max_body, settings.port, settings.nats_url) == (256 * 1024, 0, "nats://n:4222")
    assert settings_from([], env).max_body == 1024 * 1024
    inline = settings_from([], {"CELERIAC_GATEWAY_TOKENS": json.dumps({"tokens": {TOKEN: "*"}})})
    assert inline.access.grant(TOKEN) is not None


BAD_SETTINGS = [
    ([], {}, "no tokens: set CELERIAC_GATEWAY_TOKENS_FILE"),
    (["--tokens-file", "/nonexistent/tokens"], {}, "cannot read the tokens file /nonexistent"),
    (["--max-body", "lots"], {"CELERIAC_GATEWAY_TOKENS": "{}"}, "--max-body must be a number"),
    (["--max-body", "infk"], {"CELERIAC_GATEWAY_TOKENS": "{}"}, "--max-body must be a number"),
    (["--max-body", "10"], {"CELERIAC_GATEWAY_TOKENS": "{}"}, "at least 1024 bytes"),
    (["--port", "70000"], {"CELERIAC_GATEWAY_TOKENS": "{}"}, "invalid port 70000"),
    ([], {"CELERIAC_GATEWAY_TOKENS": "{}"}, "defines no tokens and no hooks"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_SETTINGS, ids=[c[2] for c in BAD_SETTINGS])
def test_bad_settings_are_one_sentence(case: tuple[list[str], dict[str, str], str]) -> None:
    argv, env, message = case
    with pytest.raises(SettingsError) as caught:
        settings_from(argv, env)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("loc", "field"),
    [(("body", "countdown"), "countdown"), (("body", "tasks", 2, "eta"), "tasks[2].eta"),
     (("query", "wait"), "wait"), (("header", "idempotency_key"), "Idempotency-Key"),
     (("body",), "body"), ((), "body")],
)  # fmt: skip
def test_field_names_from_validation_locations(loc: tuple[int | str, ...], field: str) -> None:
    assert location(loc) == field


def test_a_hook_delivery_keeps_its_id_or_a_digest_of_it() -> None:
    assert hook_task_id("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W") == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    odd = hook_task_id("msg/with spaces")
    assert odd.startswith("hook-") and odd == hook_task_id("msg/with spaces")
    assert odd != hook_task_id("msg/with spaces2")
