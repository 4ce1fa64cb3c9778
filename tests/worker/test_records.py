"""The SUCCESS result document: plain JSON values round-trip, anything else is refused."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.states import TaskState
from celeriac.worker_runtime.records import success_document

JSON_VALUES: list[Any] = [
    0,
    -7,
    2**62,
    1.5,
    -0.0,
    1e-300,
    True,
    None,
    "",
    "plain",
    "ünïcødé ✓ 漢字 🚀",
    'quotes " and \\ backslash\nnewline',
    [],
    [1, "two", 3.0, None, [4, [5]]],
    {},
    {"a": 1, "nested": {"list": [1, 2, {"deep": None}], "s": "é"}},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_round_trip_through_the_result_record(value: Any) -> None:
    before = datetime.now(UTC)
    raw = success_document("proj.add", value, retries=2, worker="w-1@host")
    after = datetime.now(UTC)
    record = ResultRecord.model_validate_json(raw)
    assert record.state is TaskState.SUCCESS
    assert record.result == value
    assert type(record.result) is type(value)
    assert record.task == "proj.add"
    assert record.retries == 2
    assert record.worker == "w-1@host"
    assert record.error is None and record.exc_type is None and record.traceback is None
    assert record.date_done is not None
    assert record.date_done.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= record.date_done <= after + timedelta(seconds=1)


def test_document_is_compact_json_with_a_z_date() -> None:
    raw = success_document("t", {"k": [1, 2]}, retries=0, worker="w")
    assert b", " not in raw and b": " not in raw
    assert b'"date_done":"' in raw and b'Z"' in raw and b"+00:00" not in raw


@pytest.mark.parametrize(
    "value",
    [
        datetime.now(UTC),
        {1, 2},
        b"bytes",
        object(),
        float("nan"),
        float("inf"),
        -math.inf,
        [1, {"deep": float("nan")}],
        {"when": datetime(2024, 1, 1)},
    ],
    ids=repr,
)
def test_non_json_values_are_refused(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        success_document("t", value, retries=0, worker="w")
