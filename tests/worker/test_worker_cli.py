"""The worker's command line as Celery users write it: flags, -n placeholders, -A first.

Pure: parsing only. A worker started this way is in test_signals_worker.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from celeriac import cli
from celeriac.worker_runtime.options import (
    CELERY_ONLY,
    OptionsError,
    PoolKind,
    celery_only,
    expand_hostname,
    parse_options,
)


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (["-P", "threads"], "pool", PoolKind.THREADS),
        (["--pool", "processes"], "pool", PoolKind.PROCESSES),
        (["--pool=asyncio"], "pool", PoolKind.ASYNCIO),
        (["-P", "prefork"], "pool", PoolKind.PROCESSES),  # Celery's name for processes
        (["-P", "Threads"], "pool", PoolKind.THREADS),
        (["-P", "threads"], "concurrency", 10),
        (["-c", "8"], "concurrency", 8),
        (["--concurrency", "3"], "concurrency", 3),
        (["-n", "w1"], "hostname", "w1"),
        (["--hostname", "worker.%n"], "hostname", "worker.box"),
        ([], "hostname", None),
        (["-l", "info"], "loglevel", "INFO"),
        (["--loglevel", "warning"], "loglevel", "WARNING"),
        (["-l", "fatal"], "loglevel", "CRITICAL"),
        (["-Q", "a,b"], "queues", ("a", "b")),
        (["--queues", "a"], "queues", ("a",)),
    ],
)
def test_celery_flags(
    argv: list[str], field: str, expected: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "box.example.com")
    options = parse_options(["-A", "proj", *argv], env={})
    assert getattr(options, field) == expected


def test_the_order_of_celery_docs() -> None:
    argv = ["-A", "proj", "-P", "threads", "-c", "8", "-n", "NAME", "-Q", "a,b", "-l", "info"]
    options = parse_options(argv, env={})
    assert (options.app_spec, options.pool, options.concurrency) == ("proj", PoolKind.THREADS, 8)
    assert (options.hostname, options.queues, options.loglevel) == ("NAME", ("a", "b"), "INFO")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("w1@%h", "w1@box.example.com"),
        ("w1@%n", "w1@box"),
        ("%n.%d", "box.example.com"),
        ("w@%d", "w@example.com"),
        ("100%%", "100%"),
        ("plain", "plain"),
        ("%h-%h", "box.example.com-box.example.com"),
    ],
)
def test_hostname_placeholders(template: str, expected: str) -> None:
    assert expand_hostname(template, "box.example.com") == expected


def test_hostname_without_domain() -> None:
    assert expand_hostname("w@%n|%d", "box") == "w@box|"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("w@%i", "%i is not supported"),
        ("w%", "a lone % is not supported"),
        ("  ", "empty worker name"),
    ],
)
def test_bad_hostnames(template: str, message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        expand_hostname(template, "box")


@pytest.mark.parametrize(
    ("argv", "flag", "advice"),
    [
        (["--autoscale", "10,3"], "--autoscale", "WorkerPool"),
        (["--autoscale=10,3"], "--autoscale", "WorkerPool"),
        (["-B"], "-B", "celeriac schedule sync"),
        (["--beat"], "--beat", "periodic_task"),
        (["-E"], "-E", "--events"),
        (["--task-events"], "--task-events", "--events"),
        (["-Ofair"], "-O", "never holds more messages than -c"),
        (["--prefetch-multiplier", "4"], "--prefetch-multiplier", "-c"),
        (["--without-gossip"], "--without-gossip", "drop the option"),
        (["--without-mingle"], "--without-mingle", "drop the option"),
        (["--time-limit", "30"], "--time-limit", "time_limit"),
        (["--max-memory-per-child", "1000"], "--max-memory-per-child", "--max-tasks-per-child"),
        (["-D"], "-D", "supervisor"),
        (["--logfile=/tmp/x.log"], "--logfile", "stderr"),
        (["-X", "a"], "-X", "-Q"),
        (["--purge"], "--purge", "celeriac purge"),
        (["-b", "amqp://"], "-b", "CELERIAC_NATS_URL"),
    ],
)
def test_celery_only_options_fail_naming_the_option_and_what_to_do(
    argv: list[str], flag: str, advice: str
) -> None:
    with pytest.raises(OptionsError) as raised:
        parse_options(["-A", "proj", *argv], env={})
    text = str(raised.value)
    assert text.startswith(f"{flag} is a Celery option Celeriac does not have")
    assert advice in text


def test_every_celery_only_option_has_advice() -> None:
    for flag, advice in CELERY_ONLY.items():
        assert flag.startswith("-") and len(advice) > 10
        assert celery_only(["-A", "proj", flag]) is not None


def test_our_own_flags_are_not_taken_for_celery_ones() -> None:
    argv = ["-A", "proj", "-Q", "a", "-c", "2", "-P", "threads", "-n", "w", "-l", "ERROR"]
    assert celery_only(argv) is None
    assert celery_only(["-A", "proj", "--", "-B"]) is None  # after --: not an option


@pytest.mark.parametrize(
    ("pool", "hint"),
    [
        ("gevent", "async def"),
        ("eventlet", "-P asyncio"),
        ("solo", "-P threads -c 1"),
        ("nonsense", "choose from asyncio, threads, processes"),
    ],
)
def test_other_pools_fail_with_usage_and_a_hint(
    pool: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_options(["-A", "proj", "-P", pool], env={})
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument -P/--pool: invalid choice" in err and hint in err


# celeriac -A proj COMMAND: the dispatcher -------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "app", "rest"),
    [
        (["worker", "-A", "proj"], None, ["worker", "-A", "proj"]),
        (["-A", "proj", "worker", "-c", "2"], "proj", ["worker", "-c", "2"]),
        (["--app", "proj:app", "worker"], "proj:app", ["worker"]),
        (["--app=proj", "worker"], "proj", ["worker"]),
        (["-Aproj", "worker"], "proj", ["worker"]),
        (["--version"], None, ["--version"]),
        (["-h"], None, ["-h"]),
        ([], None, []),
    ],
)
def test_split_app(argv: list[str], app: str | None, rest: list[str]) -> None:
    assert cli.split_app(argv) == (app, rest)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-A"], "-A needs a value"),
        (["-A", "-c", "worker"], "-A needs a value"),
        (["-A", "a", "-A", "b", "worker"], "give -A/--app once"),
        (["-b", "redis://", "worker"], "-b is a Celery option Celeriac does not have"),
        (["--broker=amqp://", "worker"], "$CELERIAC_NATS_URL"),
        (["--result-backend", "redis://", "worker"], "results are stored on the NATS server"),
        (["--frobnicate", "worker"], "unknown option --frobnicate"),
    ],
)
def test_split_app_errors(argv: list[str], message: str) -> None:
    with pytest.raises(cli.CommandError, match=message.replace("$", r"\$")):
        cli.split_app(argv)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["worker", "-c", "2"], ["worker", "-A", "proj", "-c", "2"]),
        (["schedule", "sync", "--prune"], ["schedule", "sync", "--prune", "-A", "proj"]),
    ],
)
def test_app_goes_to_the_command(args: list[str], expected: list[str]) -> None:
    assert cli._with_app("proj", args) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "-A", "other"], "give -A/--app once"),
        (["worker", "--app=other"], "give -A/--app once"),
        (["status"], "not to `celeriac status`"),
        ([], "name a command after it"),
        (["beat"], "no `beat` command: schedules are held by the NATS server"),
        (["flower"], "run `celeriac dashboard`"),
    ],
)
def test_app_before_a_command_that_does_not_take_it(args: list[str], message: str) -> None:
    with pytest.raises(cli.CommandError, match=message):
        cli._with_app("proj", args)


def test_main_reports_command_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-A", "proj", "status"]) == 2
    assert "celeriac: error: -A/--app before the command" in capsys.readouterr().err
    assert cli.main(["-A", "proj", "worker", "--autoscale", "4,1"]) == 2
    assert "--autoscale is a Celery option" in capsys.readouterr().err
