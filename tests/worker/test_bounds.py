"""The worker's bounds on hostile input, as pure functions: strict decoding, dead letters
that always fit, errors that are always describable, exits that stay task failures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from celeriac.protocol.envelope import DeadLetter, DeadLetterReason, TaskMessage
from celeriac.worker_runtime.deadletters import fit, original_headers
from celeriac.worker_runtime.decoding import Rejection, decode_task
from celeriac.worker_runtime.execution import (
    MAX_ERROR_CHARS,
    MAX_TRACEBACK_CHARS,
    ContainedExit,
    contained,
    error_info,
)

VALID: dict[str, Any] = {"v": 1, "id": "t-1", "task": "m.add", "args": [1, 2], "queue": "q"}


def _doc(**fields: Any) -> bytes:
    return json.dumps({**VALID, **fields}).encode()


def _raw(text: str) -> bytes:
    return text.encode()


STRICT = [
    ("duplicate key", _raw('{"v":1,"id":"a","task":"m.add","queue":"q","queue":"r"}'),
     "key 'queue' appears twice"),
    ("duplicate nested key", _raw('{"v":1,"id":"a","task":"m.add","queue":"q",'
                                  '"kwargs":{"x":1,"x":2}}'), "key 'x' appears twice"),
    ("NaN", _raw('{"v":1,"id":"a","task":"m.add","queue":"q","args":[NaN]}'),
     "NaN is not a JSON number"),
    ("Infinity", _raw('{"v":1,"id":"a","task":"m.add","queue":"q","args":[-Infinity]}'),
     "-Infinity is not a JSON number"),
    ("5000-digit integer", _raw('{"v":1,"id":"a","task":"m.add","queue":"q","args":['
                                + "9" * 5000 + "]}"), "a number has more than"),
    ("nested 100000 deep", b'{"args":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "nested too deeply"),
    ("numeric eta", _doc(eta=0), "eta: Value error, must be an RFC 3339 time string, not int"),
    ("garbage expires", _doc(expires="soon"), "expires: Value error, must be an RFC 3339"),
    ("retries 10**30", _doc(retries=10**30), "retries: Input should be less than or equal"),
    ("negative retries", _doc(retries=-1), "retries"),
    ("max_retries huge", _doc(max_retries=10**9), "max_retries"),
    ("time limit a century plus", _doc(time_limit=1e12), "time_limit"),
    ("string bool", _doc(ignore_result="false"), "ignore_result"),
    ("int as string", _doc(retries="1"), "retries"),
    ("task name with newline", _doc(task="m.add\nINFO forged line"), "invalid task name"),
    ("task name too long", _doc(task="x" * 300), "invalid task name"),
    ("invalid parent id", _doc(parent_id="a\nb"), "parent_id"),
    ("chord size zero", _doc(chord={"id": "c", "size": 0, "callback": {"task": "m.t"}}),
     "chord.size"),
    ("negative group index", _doc(group_index=-1), "group_index"),
    ("header not a string", _doc(headers={"a\nb": 1}), "headers.'a\\nb'"),
    ("UTF-16 body", json.dumps(VALID).encode("utf-16"), "not UTF-8"),
    ("BOM", b"\xef\xbb\xbf" + json.dumps(VALID).encode(), "not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "fragment"), [c[1:] for c in STRICT], ids=[c[0] for c in STRICT])
def test_strict_decoding_refuses_naming_the_problem(data: bytes, fragment: str) -> None:
    result = decode_task(data)
    assert isinstance(result, Rejection), result
    assert result.reason is DeadLetterReason.MALFORMED
    assert fragment in result.error
    assert "\n" not in result.error  # it is logged on one line


def test_rejection_never_carries_an_id_or_name_that_could_forge_a_log_line() -> None:
    result = decode_task(_doc(id="a\nb", task="m\nx"))
    assert isinstance(result, Rejection)
    assert (result.task_id, result.task) == (None, None)


def test_valid_times_and_bounds_still_decode() -> None:
    message = decode_task(
        _doc(eta="2030-01-02T03:04:05Z", expires="2030-01-02T04:04:05+01:00", retries=10_000)
    )
    assert isinstance(message, TaskMessage)
    assert message.eta == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert message.retries == 10_000


LETTER = DeadLetter(
    reason=DeadLetterReason.MALFORMED,
    error="e",
    queue="q",
    deliveries=1,
    failed_at=datetime(2030, 1, 1, tzinfo=UTC),
    original="",
)
LIMIT = 1024 * 1024 - 4096


@pytest.mark.parametrize(
    "body",
    [b"{}", b'"' * 900 * 1024, "é\n\x00".encode() * 400_000, b"\xff\xfe\x00" * 500_000],
    ids=["small", "quotes-escape-to-double", "escapes-and-multibyte", "binary"],
)
def test_a_dead_letter_always_fits_and_keeps_the_original_recoverable(body: bytes) -> None:
    letter = fit(LETTER, body, LIMIT)
    assert len(letter.dumps()) <= LIMIT
    assert letter.original_size == len(body)
    kept = (
        base64.b64decode(letter.original)
        if letter.original_encoding == "base64"
        else letter.original.encode()
    )
    if letter.original_truncated:
        assert letter.original_sha256 == hashlib.sha256(body).hexdigest()
        assert body.startswith(kept) and len(kept) > 100_000
    else:
        assert kept == body


def test_original_headers_are_bounded() -> None:
    headers = {f"h{i}": "v" * 5000 for i in range(200)}
    kept = original_headers(headers)
    assert len(kept) == 64 and all(len(v) == 1024 for v in kept.values())


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_an_exception_whose_str_raises_is_still_described() -> None:
    info = error_info(_UnprintableError())
    assert info.exc_type == "_UnprintableError"
    assert info.message == "<str() of the exception raised RuntimeError>"


def test_huge_errors_are_clipped() -> None:
    def deep(n: int) -> None:
        if n == 0:
            raise ValueError("x" * 1_000_000)
        deep(n - 1)

    try:
        deep(500)
    except ValueError as exc:
        info = error_info(exc)
    assert len(info.message) <= MAX_ERROR_CHARS + 40
    assert info.traceback is not None and len(info.traceback) <= MAX_TRACEBACK_CHARS + 40
    assert info.traceback.startswith("[") and "characters cut]..." in info.traceback


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_exits_raised_by_task_code_become_ordinary_failures(exc: BaseException) -> None:
    async def task() -> None:
        raise exc

    async def run() -> BaseException:
        inner = asyncio.ensure_future(contained(task()))
        await asyncio.wait({inner})
        error = inner.exception()
        assert error is not None
        return error

    error = asyncio.run(run())
    assert isinstance(error, ContainedExit)
    assert error_info(error).exc_type == type(exc).__name__
