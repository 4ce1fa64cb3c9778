"""Pure parts of the worker: command line, app loading, message decoding."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.protocol.envelope import DeadLetterReason, TaskMessage
from celeriac.worker_runtime.decoding import Rejection, decode_task
from celeriac.worker_runtime.loading import AppLoadError, load_app
from celeriac.worker_runtime.options import OptionsError, PoolKind, parse_options


def test_options_defaults() -> None:
    opts = parse_options(["-A", "proj.tasks"], env={})
    assert opts.app_spec == "proj.tasks"
    assert opts.queues == ()
    assert opts.pool is PoolKind.ASYNCIO
    assert opts.concurrency == 100
    assert opts.health_port == 8080
    assert opts.drain_timeout == 25.0
    assert opts.loglevel == "INFO"


def test_options_all_flags() -> None:
    argv = [
        "-A", "proj:make_app", "-Q", "a,b, a", "-c", "3", "--pool", "processes",
        "--max-tasks-per-child", "5", "--health-port", "0", "--drain-timeout", "2.5",
        "--loglevel", "debug",
    ]  # fmt: skip
    opts = parse_options(argv, env={"CELERIAC_HEALTH_PORT": "9999"})
    assert opts.queues == ("a", "b")
    assert (opts.concurrency, opts.pool, opts.max_tasks_per_child) == (3, PoolKind.PROCESSES, 5)
    assert (opts.health_port, opts.drain_timeout, opts.loglevel) == (0, 2.5, "DEBUG")


def test_health_port_from_env() -> None:
    assert parse_options(["-A", "m"], env={"CELERIAC_HEALTH_PORT": "9100"}).health_port == 9100
    with pytest.raises(OptionsError, match="CELERIAC_HEALTH_PORT"):
        parse_options(["-A", "m"], env={"CELERIAC_HEALTH_PORT": "http"})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-Q", "x"], "required: -A"),
        (["-A", "m", "-Q", "Bad.Queue"], "invalid queue name"),
        (["-A", "m", "-c", "0"], "at least 1"),
        (["-A", "m", "--pool", "gevent"], "invalid choice"),
        (["-A", "m", "--health-port", "70000"], "0-65535"),
        (["-A", "m", "--drain-timeout", "-1"], "negative"),
    ],
)
def test_bad_options_exit_with_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_options(argv, env={})
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_max_tasks_per_child_needs_processes() -> None:
    with pytest.raises(OptionsError, match="processes"):
        parse_options(["-A", "m", "--max-tasks-per-child", "3"], env={})


@pytest.fixture
def app_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder of app modules on sys.path, removed afterwards."""
    sources = {
        "one_app": """
            from celeriac.app import Celeriac
            my_app = Celeriac("one", nats_url="nats://127.0.0.1:1")
        """,
        "two_apps": """
            from celeriac.app import Celeriac
            a = Celeriac("a", nats_url="nats://127.0.0.1:1")
            b = Celeriac("b", nats_url="nats://127.0.0.1:1")
            def factory():
                return b
            not_app = 42
        """,
        "no_app": "x = 1\n",
    }
    for name, text in sources.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(tmp_path)
    yield tmp_path
    for name in sources:
        sys.modules.pop(name, None)


def test_load_app_finds_the_only_instance(app_modules: Path) -> None:
    assert load_app("one_app").name == "one"


def test_load_app_by_attribute_or_factory(app_modules: Path) -> None:
    assert load_app("two_apps:a").name == "a"
    assert load_app("two_apps:factory").name == "b"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("two_apps", "defines 2 Celeriac apps"),
        ("no_app", "defines no Celeriac app"),
        ("two_apps:missing", "has no attribute 'missing'"),
        ("two_apps:not_app", "not a Celeriac app"),
        ("surely_not_a_module_xyz", "cannot import"),
        (":app", "invalid app spec"),
    ],
)
def test_load_app_errors(app_modules: Path, spec: str, message: str) -> None:
    with pytest.raises(AppLoadError, match=message):
        load_app(spec)


VALID = {"v": 1, "id": "t-1", "task": "tests.add", "args": [1, 2], "queue": "default"}


@pytest.mark.parametrize(
    ("data", "reason", "fragment"),
    [
        (b"{not json", DeadLetterReason.MALFORMED, "not valid JSON"),
        (b"\xff\xfe", DeadLetterReason.MALFORMED, "not valid JSON"),
        (b"[1, 2]", DeadLetterReason.MALFORMED, "expected a JSON object"),
        (json.dumps({**VALID, "v": 2}).encode(), DeadLetterReason.UNSUPPORTED_VERSION, "version 2"),
        (json.dumps({**VALID, "v": "1"}).encode(), DeadLetterReason.UNSUPPORTED_VERSION, "'1'"),
        (json.dumps({**VALID, "task": ""}).encode(), DeadLetterReason.MALFORMED, "task"),
        (
            json.dumps({**VALID, "id": "a b"}).encode(),
            DeadLetterReason.MALFORMED,
            "invalid task id",
        ),
        (json.dumps({**VALID, "args": "x"}).encode(), DeadLetterReason.MALFORMED, "args"),
        (json.dumps({"v": 1, "task": "x"}).encode(), DeadLetterReason.MALFORMED, "id"),
    ],
)
def test_decode_rejections(data: bytes, reason: DeadLetterReason, fragment: str) -> None:
    result = decode_task(data)
    assert isinstance(result, Rejection)
    assert result.reason is reason
    assert fragment in result.error


def test_decode_valid_ignores_unknown_fields() -> None:
    result = decode_task(json.dumps({**VALID, "future_field": True}).encode())
    assert isinstance(result, TaskMessage)
    assert (result.id, result.task, result.args) == ("t-1", "tests.add", [1, 2])


def test_rejection_keeps_readable_id_and_name() -> None:
    result = decode_task(json.dumps({**VALID, "v": 9}).encode())
    assert isinstance(result, Rejection)
    assert (result.task_id, result.task) == ("t-1", "tests.add")


def test_celeriac_worker_command_dispatches_here(capsys: pytest.CaptureFixture[str]) -> None:
    from celeriac.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["worker", "--help"])
    assert exc.value.code == 0
    assert "--max-tasks-per-child" in capsys.readouterr().out


def test_bad_app_spec_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from celeriac.worker_runtime.cli import main

    assert main(["-A", "surely_not_a_module_xyz", "--health-port", "0"]) == 2
