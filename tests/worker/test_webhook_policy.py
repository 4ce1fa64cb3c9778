"""Completion webhooks, the pure parts: retry policy, address check, signatures,
secrets file, and the ``webhook`` option checked at submit time (naming the option)."""

from __future__ import annotations

import base64
import ipaddress
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from celeriac.app import Celeriac
from celeriac.protocol.envelope import DeadLetterReason
from celeriac.protocol.resources import TaskQueueSpec
from celeriac.protocol.webhooks import (
    WEBHOOKS_STREAM,
    WebhookEvent,
    signature_header,
    webhook_subject,
    webhook_target,
)
from celeriac.submitting import check_options
from celeriac.worker_runtime.destinations import (
    AddressRules,
    literal_refusal,
    parse_networks,
    refusal,
)
from celeriac.worker_runtime.webhookcli import ALLOW_CIDRS_ENV, ALLOW_PRIVATE_ENV, build_parser
from celeriac.worker_runtime.webhookjobs import job_id
from celeriac.worker_runtime.webhookretries import (
    RETRYABLE_4XX,
    Attempt,
    Delivered,
    RetryPolicy,
    Stop,
    TryAgain,
    backoff_delay,
    decide,
    parse_retry_after,
)
from celeriac.worker_runtime.webhooksecrets import (
    SECRETS_FILE_ENV,
    SecretsFileError,
    parse_secrets,
)

POLICY = RetryPolicy(max_attempts=4, backoff=1.0, backoff_max=5.0)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (Attempt(1, 200), Delivered()),
        (Attempt(4, 204), Delivered()),
        (Attempt(1, 410), Stop("the receiver answered 410 Gone; not tried again")),
        (Attempt(1, 400), Stop("the receiver answered 400, a client error; not tried again")),
        (Attempt(1, 404), Stop("the receiver answered 404, a client error; not tried again")),
        (
            Attempt(1, 302),
            Stop("the receiver answered 302, a redirect; redirects are not followed"),
        ),
        (Attempt(1, 429, retry_after=7.0), TryAgain(7.0)),
        (Attempt(1, 503, retry_after=2.5), TryAgain(2.5)),
        (Attempt(1, 429, retry_after=99999.0), TryAgain(3600.0)),
        (Attempt(4, 500), Stop("the receiver answered 500 on the last of 4 attempt(s)")),
        (
            Attempt(4, 429, retry_after=1.0),
            Stop("the receiver answered 429 on the last of 4 attempt(s)"),
        ),
        (
            Attempt(4, None, error="no answer within 10s"),
            Stop("no answer within 10s on the last of 4 attempt(s)"),
        ),
    ],
)
def test_decisions(attempt: Attempt, expected: object) -> None:
    assert decide(attempt, POLICY, random.Random(0)) == expected


@pytest.mark.parametrize("status", [None, 408, 409, 425, 429, 500, 502, 503])
def test_retryable_answers_back_off(status: int | None) -> None:
    decision = decide(Attempt(2, status, error="reset"), POLICY, random.Random(1))
    assert isinstance(decision, TryAgain)
    assert 1.0 <= decision.delay <= 2.0  # the second wait: 2 s, jittered into [1, 2]


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (4, 2.5, 5.0), (60, 2.5, 5.0)],
)
def test_backoff_grows_and_is_capped(attempt: int, low: float, high: float) -> None:
    delays = [backoff_delay(attempt, POLICY, random.Random(seed)) for seed in range(50)]
    assert all(low <= d <= high for d in delays)
    assert len(set(delays)) > 1  # jittered


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 0 ", 0.0),
        ("Thu, 01 Jan 2026 00:00:30 GMT", 30.0),
        ("Wed, 31 Dec 2025 00:00:00 GMT", 0.0),  # in the past: at once
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


NONE = AddressRules()


@pytest.mark.parametrize(
    ("address", "rules", "refused"),
    [
        ("93.184.216.34", NONE, None),
        ("2606:4700::1111", NONE, None),
        ("127.0.0.1", NONE, "a loopback"),
        ("::1", NONE, "a loopback"),
        ("::ffff:127.0.0.1", NONE, "a loopback"),
        ("10.1.2.3", NONE, "a private"),
        ("192.168.0.10", NONE, "a private"),
        ("172.16.0.1", NONE, "a private"),
        ("169.254.169.254", NONE, "a link-local"),
        ("fe80::1", NONE, "a link-local"),
        ("224.0.0.1", NONE, "a multicast"),
        ("0.0.0.0", NONE, "an unspecified"),
        ("240.0.0.1", NONE, "a reserved"),
        ("100.64.0.1", NONE, "a non-public"),
        ("127.0.0.1", AddressRules(allow_private=True), None),
        ("10.1.2.3", AddressRules(allowed=parse_networks("10.1.0.0/16")), None),
        ("10.2.0.1", AddressRules(allowed=parse_networks("10.1.0.0/16")), "a private"),
    ],
)
def test_address_check(address: str, rules: AddressRules, refused: str | None) -> None:
    why = refusal(ipaddress.ip_address(address), rules)
    if refused is None:
        assert why is None
    else:
        assert why is not None and f"is {refused} address" in why


def test_literal_hosts_are_checked_and_names_are_left_to_the_resolver() -> None:
    assert literal_refusal("127.0.0.1", NONE) is not None
    assert literal_refusal("[::1]", NONE) is not None
    assert literal_refusal("example.com", NONE) is None


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match=r"not a network \(CIDR\): '10\.0\.0\.0/99'"):
        parse_networks("10.0.0.0/8, 10.0.0.0/99")


def _secret(seed: int) -> str:
    return "whsec_" + base64.b64encode(bytes([seed]) * 24).decode()


def test_every_signature_verifies_with_the_standard_library() -> None:
    secrets = parse_secrets(f'{{"default": ["{_secret(1)}", "{_secret(2)}"]}}', "f.json")
    body = b'{"type":"task.succeeded"}'
    stamp = int(datetime.now(UTC).timestamp())
    header = signature_header(secrets["default"], "msg_1", stamp, body)
    assert len(header.split()) == 2
    for seed, signature in zip((1, 2), header.split(), strict=True):
        headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp),
                   "webhook-signature": signature}  # fmt: skip
        assert Webhook(_secret(seed)).verify(body, headers) == {"type": "task.succeeded"}
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(_secret(3)).verify(body, {"webhook-id": "msg_1", "webhook-timestamp": str(stamp),
                                          "webhook-signature": header})  # fmt: skip


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{", "f.json: not JSON"),
        ("[]", "must be a JSON object"),
        ('{"a": 3}', "'a' must be a secret or a list of secrets"),
        ('{"a": "secret"}', "'a': a webhook secret must start with 'whsec_'"),
        ('{"a": "whsec_!!"}', "'a': a webhook secret must be 'whsec_' then base64"),
        ('{"a": "whsec_AAAA"}', "'a': a webhook secret must hold at least 16 bytes"),
    ],
)
def test_secrets_file_mistakes_are_named(text: str, error: str) -> None:
    with pytest.raises(SecretsFileError, match=error.replace("(", "\\(")):
        parse_secrets(text, "f.json")


def test_job_ids_are_stable_per_message_and_event() -> None:
    assert job_id("t1", 7, WebhookEvent.SUCCEEDED) == "t1.7.succeeded"
    assert job_id("t1", 7, WebhookEvent.FAILED) != job_id("t1", 8, WebhookEvent.FAILED)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("ftp://example.com/", "webhook url: must be an http:// or https:// URL"),
        ("https://user:pw@example.com/", "webhook url: must not carry a user name"),
        ({"url": "https://e.com", "events": ["done"]}, "webhook events.0: use succeeded, failed"),
        ({"url": "https://e.com", "events": []}, "webhook events: must name at least one"),
        (
            {"url": "https://e.com", "secret": "no spaces"},
            "webhook secret: must be a secret's name",
        ),
        ({"url": "https://e.com", "retries": 3}, "webhook: unknown key\\(s\\) 'retries'"),
        ({"events": ["failed"]}, "webhook url: Field required"),
        (42, "webhook must be a URL or a dict"),
    ],
)
def test_submit_time_errors_name_the_option(value: object, error: str) -> None:
    with pytest.raises((TypeError, ValueError), match=error):
        check_options({"webhook": value}, "apply_async")


def test_the_option_in_all_its_spellings_reaches_the_message() -> None:
    app = Celeriac("webhook-units", nats_url="nats://127.0.0.1:1")

    @app.task(name="u.hooked", webhook="https://example.com/hook")
    def hooked() -> None: ...

    @app.task(name="u.plain")
    def plain() -> None: ...

    message = hooked._plan(None, None, {}, "apply_async")[0].items[0].message
    assert message.webhook == webhook_target("https://example.com/hook")
    assert message.webhook.events == [WebhookEvent.SUCCEEDED, WebhookEvent.FAILED]
    assert message.webhook.secret == "default"
    off = hooked._plan(None, None, {"webhook": None}, "apply_async")[0].items[0].message
    assert off.webhook is None
    given = {"url": "https://example.com/b", "events": ["dead_lettered"], "secret": "billing"}
    chosen = plain._plan(None, None, {"webhook": given}, "apply_async")[0].items[0].message
    assert chosen.webhook is not None and chosen.webhook.model_dump(mode="json") == given
    with pytest.raises(ValueError, match="webhook url"):
        app.task(name="u.bad", webhook="not a url")(lambda: None)


def test_the_doc_names_what_the_code_uses() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    flags = [a for action in build_parser()._actions for a in action.option_strings]
    names = [
        WEBHOOKS_STREAM,
        webhook_subject("<queue>"),
        SECRETS_FILE_ENV,
        ALLOW_PRIVATE_ENV,
        ALLOW_CIDRS_ENV,
        DeadLetterReason.WEBHOOK_FAILED.value,
        *(f"`{e.value}`" for e in WebhookEvent),
        *(str(s) for s in RETRYABLE_4XX),
        *(
            f
            for f in flags
            if f.startswith("--") and f not in ("--help", "--loglevel", "--log-format")
        ),
    ]
    missing = [name for name in names if name not in doc]
    assert not missing


@pytest.mark.parametrize(
    ("webhooks", "error"),
    [
        ({"url": "ftp://x"}, "String should match pattern"),
        ({"url": "https://u:pw@example.com/"}, "webhook url: must not carry a user name"),
        ({"url": "https://e.com", "events": []}, "at least 1 item"),
        ({"url": "https://e.com", "events": ["done"]}, "Input should be 'succeeded'"),
        ({"url": "https://e.com", "secretName": "a b"}, "String should match pattern"),
    ],
)
def test_taskqueue_webhooks_are_checked_like_the_option(
    webhooks: dict[str, object], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        TaskQueueSpec.model_validate({"webhooks": webhooks})


def test_taskqueue_webhooks_become_a_target() -> None:
    spec = TaskQueueSpec.model_validate(
        {"webhooks": {"url": "https://e.com/h", "events": ["failed"], "secretName": "ops"}}
    )
    assert spec.webhooks is not None
    assert spec.webhooks.target() == webhook_target(
        {"url": "https://e.com/h", "events": ["failed"], "secret": "ops"}
    )
    assert TaskQueueSpec.model_validate({}).webhooks is None
