"""The operator's log setup: kopf's handler, in JSON lines naming the object."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from celeriac.operator.cli import build_parser
from celeriac.operator.logs import configure_logging, log_format_from_env


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """Put the root logger back as it was (kopf.configure replaces its own handler)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def kopf_stream(stream: io.StringIO) -> None:
    """Point the handler kopf installed at ``stream`` instead of stderr."""
    ours = [h for h in logging.getLogger().handlers if type(h).__module__.startswith("kopf")]
    assert len(ours) == 1
    handler = ours[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)


def object_logger() -> Any:
    body = kopf.Body(
        {
            "apiVersion": "celeriac.io/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": "emails", "namespace": "apps", "uid": "u1"},
        }
    )
    from kopf._core.actions.loggers import LocalObjectLogger

    return LocalObjectLogger(body=body, settings=kopf.OperatorSettings())


@pytest.mark.usefixtures("root_handlers")
def test_json_lines_carry_the_object_kopf_names() -> None:
    configure_logging("json", verbose=True)
    stream = io.StringIO()
    kopf_stream(stream)
    object_logger().info("scaled to 3")
    logging.getLogger("celeriac.operator").warning("NATS at %s", "nats://x:4222")
    try:
        raise RuntimeError("broken")
    except RuntimeError:
        logging.getLogger("kopf.objects").exception("handler failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    scaled, nats, failed = lines
    assert {k: scaled[k] for k in ("level", "logger", "message")} == {
        "level": "INFO",
        "logger": "kopf.objects",
        "message": "scaled to 3",
    }
    assert (scaled["kind"], scaled["namespace"], scaled["name"]) == ("WorkerPool", "apps", "emails")
    assert scaled["time"].endswith("Z") and "T" in scaled["time"]
    assert nats["message"] == "NATS at nats://x:4222" and "namespace" not in nats
    assert failed["level"] == "ERROR" and "RuntimeError: broken" in failed["exc"]


@pytest.mark.usefixtures("root_handlers")
def test_text_stays_kopfs_format() -> None:
    configure_logging("text")
    stream = io.StringIO()
    kopf_stream(stream)
    object_logger().info("scaled to 3")
    line = stream.getvalue().strip()
    assert line.endswith("[INFO    ] scaled to 3") and not line.startswith("{")


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, "text"),
        ([], {"CELERIAC_LOG_FORMAT": "json"}, "json"),
        (["--log-format", "json"], {"CELERIAC_LOG_FORMAT": "text"}, "json"),
        (["--log-format", "JSON"], {}, "json"),
    ],
)
def test_the_flag_wins_over_the_environment(
    argv: list[str], env: dict[str, str], expected: str
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.log_format or log_format_from_env(env)) == expected


def test_a_wrong_format_in_the_environment_is_named() -> None:
    with pytest.raises(ValueError, match=r"\$CELERIAC_LOG_FORMAT must be text or json, not 'xml'"):
        log_format_from_env({"CELERIAC_LOG_FORMAT": "xml"})
