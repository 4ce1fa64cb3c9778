"""NATS credentials and TLS files: read from a Secret-like directory, turned into
connect options, and refusals told apart from outages."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from nats.errors import AuthorizationError
from nats.errors import Error as NatsError

from celeriac import Celeriac, CeleriacError, NatsAuth
from celeriac.natsauth import refusal


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, {}),
        ({"user": "app\n", "password": "s3cret\n"}, {"user": "app", "password": "s3cret"}),
        ({"token": "t0ken"}, {"token": "t0ken"}),
        ({"nats.creds": "x"}, {"creds_file": "nats.creds"}),
        ({"ca.crt": "x"}, {"ca_file": "ca.crt"}),
        ({"tls.crt": "x", "tls.key": "y"}, {"cert_file": "tls.crt", "key_file": "tls.key"}),
        ({"unrelated": "x"}, {}),
    ],
)  # fmt: skip
def test_a_directory_gives_what_it_holds(
    tmp_path: Path, files: dict[str, str], expected: dict[str, str]
) -> None:
    auth = NatsAuth.from_directory(_write(tmp_path / "s", files))
    paths = {"creds_file", "ca_file", "cert_file", "key_file"}
    want = {k: str(tmp_path / "s" / v) if k in paths else v for k, v in expected.items()}
    got = {k: v for k, v in vars(auth).items() if v is not None and k != "directory"}
    assert got == want
    assert auth.directory == str(tmp_path / "s")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"password": "p"}, "a password without a user"),
        ({"tls.crt": "x"}, "tls.crt and tls.key go together"),
        ({"tls.key": "x"}, "tls.crt and tls.key go together"),
    ],
)
def test_incomplete_directories_are_refused(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    with pytest.raises(CeleriacError, match=message):
        NatsAuth.from_directory(_write(tmp_path / "s", files))


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(CeleriacError, match="CELERIAC_NATS_AUTH_DIR"):
        NatsAuth.from_directory(tmp_path / "absent")


def test_the_environment_names_the_directory_and_a_creds_file(tmp_path: Path) -> None:
    secret = _write(tmp_path / "s", {"user": "u", "password": "p", "nats.creds": "x"})
    env = {"CELERIAC_NATS_AUTH_DIR": str(secret)}
    assert NatsAuth.from_environment(env).creds_file == str(secret / "nats.creds")
    assert NatsAuth.from_environment({**env, "CELERIAC_NATS_CREDS": "/c"}).creds_file == "/c"
    assert NatsAuth.from_environment(env, creds_file="/arg").creds_file == "/arg"
    assert NatsAuth.from_environment({}) == NatsAuth()


def test_the_app_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = _write(tmp_path / "s", {"token": "t"})
    monkeypatch.setenv("CELERIAC_NATS_AUTH_DIR", str(secret))
    assert Celeriac("a").nats_auth.token == "t"
    assert Celeriac("a", nats_auth=NatsAuth(user="u")).nats_auth.user == "u"


def test_a_directory_is_read_again_at_each_connect(tmp_path: Path) -> None:
    secret = _write(tmp_path / "s", {"user": "u", "password": "old"})
    auth = NatsAuth.from_directory(secret)
    (secret / "password").write_text("new")
    assert auth.connect_options()["password"] == "new"
    assert auth.current().password == "new"


def test_connect_options(tmp_path: Path) -> None:
    assert NatsAuth().connect_options() == {}
    options = NatsAuth(user="u", password="p", token="t", creds_file="/c").connect_options()
    assert options == {"user": "u", "password": "p", "token": "t", "user_credentials": "/c"}


def test_tls_verifies_against_the_given_ca(tmp_path: Path) -> None:
    with pytest.raises(CeleriacError, match="cannot load NATS TLS files"):
        NatsAuth(ca_file=str(tmp_path / "missing.crt")).connect_options()
    (tmp_path / "bad.crt").write_text("not a certificate")
    with pytest.raises(CeleriacError, match="cannot load NATS TLS files"):
        NatsAuth(ca_file=str(tmp_path / "bad.crt")).connect_options()


def test_the_summary_never_shows_a_secret() -> None:
    auth = NatsAuth(user="app", password="s3cret", token="t0ken", ca_file="/ca.crt")
    assert auth.summary() == "user app, a token, CA /ca.crt"
    assert NatsAuth().summary() == "no credentials"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (AuthorizationError(), "credentials were refused"),
        (NatsError("nats: 'Authorization Violation'"), "credentials were refused"),
        (NatsError("nats: 'User Authentication Expired'"), "credentials were refused"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "not trusted"),
        (ssl.SSLError(1, "wrong version number"), "TLS failed"),
        (NatsError("nats: 'Secure Connection - TLS Required'"), "requires TLS"),
        (ConnectionRefusedError(111, "refused"), None),
        (TimeoutError(), None),
        (NatsError("nats: 'Stale Connection'"), None),
    ],
)  # fmt: skip
def test_refusals_are_told_from_outages(exc: BaseException, expected: str | None) -> None:
    reason = refusal(exc)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason
