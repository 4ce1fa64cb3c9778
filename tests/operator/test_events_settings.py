"""Task events in the operator: the events stream's limits (flags, environment) and a
WorkerPool with ``events: true`` running ``celeriac worker --events``."""

from __future__ import annotations

import pytest

from celeriac.operator import cli
from celeriac.operator.config import (
    EVENTS_MAX_AGE_ENV,
    EVENTS_MAX_BYTES_ENV,
    OperatorConfig,
    events_max_age,
    parse_size,
)
from celeriac.operator.manifests import PoolRef, worker_command, worker_deployment
from celeriac.protocol import jetstream, names
from celeriac.protocol.resources import WorkerPoolSpec

MiB = 2**20


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1024", 1024),
        ("256MiB", 256 * MiB),
        ("256mib", 256 * MiB),
        ("1GiB", 2**30),
        ("1.5GiB", 3 * 2**29),
        ("500MB", 500_000_000),
        ("64 KiB", 64 * 1024),
        ("2048B", 2048),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "error"),
    [("lots", "invalid size"), ("-5MiB", "invalid size"), ("1PB", "invalid size"),
     ("10", "too small")],
)  # fmt: skip
def test_bad_sizes(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_size(text)


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600), ("30m", 1800), ("1d12h", 129600)])
def test_ages(text: str, seconds: float) -> None:
    assert events_max_age(text) == seconds


@pytest.mark.parametrize("text", ["0s", "soon", "10"])
def test_bad_ages(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        events_max_age(text)


def test_flags_default_to_an_hour_and_256_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENTS_MAX_AGE_ENV, raising=False)
    monkeypatch.delenv(EVENTS_MAX_BYTES_ENV, raising=False)
    args = cli.build_parser().parse_args([])
    assert (args.events_max_age, args.events_max_bytes) == (3600.0, 256 * MiB)
    assert OperatorConfig().events_settings() == jetstream.EventsSettings()


def test_flags_set_the_events_stream_limits() -> None:
    args = cli.build_parser().parse_args(
        ["--events-max-age", "6h", "--events-max-bytes", "1GiB", "--bucket-replicas", "3"]
    )
    config = OperatorConfig(
        bucket_replicas=args.bucket_replicas,
        events_max_age=args.events_max_age,
        events_max_bytes=args.events_max_bytes,
    )
    stream = jetstream.events_stream_config(config.events_settings())
    assert stream["name"] == names.EVENTS_STREAM == "CELERIAC_EVENTS"
    assert stream["subjects"] == ["celeriac.events.>"]
    assert (stream["max_age"], stream["max_bytes"], stream["num_replicas"]) == (
        6 * 3600.0,
        2**30,
        3,
    )
    assert (stream["retention"], stream["discard"]) == ("limits", "old")


def test_the_environment_sets_them_too(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {EVENTS_MAX_AGE_ENV: "15m", EVENTS_MAX_BYTES_ENV: "64MiB"}
    config = OperatorConfig.from_env(env)
    assert (config.events_max_age, config.events_max_bytes) == (900.0, 64 * MiB)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = cli.build_parser().parse_args([])
    assert (args.events_max_age, args.events_max_bytes) == (900.0, 64 * MiB)


@pytest.mark.parametrize(
    ("argv", "error"),
    [(["--events-max-age", "forever"], "invalid duration"),
     (["--events-max-bytes", "huge"], "invalid size")],
)  # fmt: skip
def test_bad_flags_are_usage_errors(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert error in capsys.readouterr().err


def _spec(**extra: object) -> WorkerPoolSpec:
    return WorkerPoolSpec.model_validate(
        {"queues": ["emails"], "app": "shop.tasks:app", "image": "shop:1", **extra}
    )


def test_a_pool_with_events_runs_its_workers_with_events() -> None:
    pool = PoolRef(name="emails", namespace="apps", uid="1234")
    deployment = worker_deployment(pool, _spec(events=True), nats_url="nats://n:4222", replicas=1)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert "--events" in container["command"] + container.get("args", [])


def test_events_are_off_unless_asked_for() -> None:
    assert _spec().events is False
    assert "--events" not in worker_command(_spec())
    assert "--events" not in worker_command(_spec(events=False))
