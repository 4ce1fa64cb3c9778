"""``celeriac_devenv.dashboard``: the dashboard the demo and the memory benchmark start."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from celeriac_devenv.dashboard import start_dashboard
from celeriac_devenv.errors import DevenvError

pytestmark = pytest.mark.integration


def test_starts_answers_and_stops(nats_url: str, tmp_path: Path) -> None:
    dash = start_dashboard(nats_url, log_dir=tmp_path)
    try:
        assert dash.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{dash.url}api/pools", timeout=10) as response:
            pools = json.load(response)
        assert set(pools) >= {"connected", "pools"}
        with urllib.request.urlopen(f"{dash.url}api/queues", timeout=10) as response:
            assert response.status == 200
    finally:
        dash.stop()
    assert not dash.process.alive()
    assert "celeriac dashboard on" in dash.process.log_path.read_text()


def test_a_dashboard_that_cannot_start_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(DevenvError, match="dashboard exited"):
        start_dashboard("http://not-nats:1", log_dir=tmp_path, extra_env={
            "CELERIAC_DASHBOARD_USERNAME": "only-a-user"})  # fmt: skip
