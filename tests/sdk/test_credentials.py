"""NATS credentials: taken from the argument or CELERIAC_NATS_CREDS, and used on connect."""

from __future__ import annotations

from pathlib import Path

import pytest

from celeriac import Celeriac, CeleriacError


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_NATS_CREDS", "/etc/celeriac/nats/nats.creds")
    assert Celeriac("creds").nats_credentials == "/etc/celeriac/nats/nats.creds"
    assert Celeriac("creds", nats_credentials="/x.creds").nats_credentials == "/x.creds"


def test_no_credentials_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERIAC_NATS_CREDS", raising=False)
    assert Celeriac("creds").nats_credentials is None


@pytest.mark.integration
async def test_a_missing_credentials_file_fails_the_connection_clearly(
    nats_url: str, tmp_path: Path
) -> None:
    app = Celeriac("creds", nats_url, nats_credentials=str(tmp_path / "missing.creds"))
    with pytest.raises(CeleriacError, match="cannot connect to NATS"):
        await app.broker()
    await app.aclose()
