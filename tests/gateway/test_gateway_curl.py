"""Any language, proven: the system's ``curl`` submits a task and reads its result
through the gateway, with the very lines docs/protocol.md shows."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from celeriac_devenv.nats import NatsServer

from tests.gateway.conftest import StartGateway, Tokens
from tests.support import StartWorker

pytestmark = pytest.mark.integration
PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _block(marker: str, language: str) -> str:
    """The fenced ``language`` block right after ``<!-- marker -->`` in the protocol doc."""
    text = PROTOCOL.read_text()
    found = re.search(rf"<!-- {marker} -->\n```{language}\n(.*?)\n```", text, re.DOTALL)
    assert found, f"docs/protocol.md has no {language} block after <!-- {marker} -->"
    return found.group(1)


def test_the_documented_curl_lines_submit_and_read_a_result(
    private_nats: NatsServer, start_gateway: StartGateway, start_worker: StartWorker, tokens: Tokens
) -> None:
    curl = shutil.which("curl")
    assert curl, "the system's curl is needed"
    url = private_nats.url
    # The example's queue is "default", on a nats-server of this test's own.
    start_worker("default", url=url)
    gateway = start_gateway(env={"CELERIAC_GATEWAY_TOKENS_FILE": str(tokens.path)}, url=url)
    script = _block("gateway-curl-example", "sh")
    assert script.count("curl ") == 2
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={"PATH": str(Path(curl).parent), "CELERIAC_GATEWAY": gateway.url,
             "CELERIAC_TOKEN": tokens.all},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr + run.stdout
    shown = _block("gateway-curl-output", "json").splitlines()
    printed = run.stdout.splitlines()
    assert len(printed) == len(shown) == 2
    assert printed[0] == shown[0]
    done = json.loads(printed[1])
    assert done["date_done"]
    assert done | {"date_done": None} == json.loads(shown[1]) | {"date_done": None}
