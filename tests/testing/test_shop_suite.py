"""The example shop's own test suite passes with no nats-server anywhere.

It runs as a user runs it: ``pytest`` in examples/shop, in a subprocess whose PATH
holds no nats-server, whose NATS URL points where nothing listens, and with a
plugin that fails the run on any network connection at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop"
PLUGINS = Path(__file__).parent / "plugins"


def offline_env() -> dict[str, str]:
    """The environment without nats-server on PATH, with the plugin importable."""
    path = [
        d for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not (Path(d) / "nats-server").exists()
    ]  # fmt: skip
    env = {
        **os.environ,
        "PATH": os.pathsep.join(path),
        "PYTHONPATH": str(PLUGINS),
        "PYTHONDONTWRITEBYTECODE": "1",
        # Were anything to try NATS anyway, this is where it would fail fast.
        "CELERIAC_NATS_URL": "nats://127.0.0.1:9",
        "CELERIAC_CONNECT_TIMEOUT": "1",
    }
    assert shutil.which("nats-server", path=env["PATH"]) is None
    return env


def run_pytest(cwd: Path, report: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "forbid_network",
               f"--junitxml={report}", "-q", *args]  # fmt: skip
    return subprocess.run(
        command, cwd=cwd, env=offline_env(), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def counts(report: Path) -> dict[str, int]:
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    return {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}


def test_the_shop_suite_passes_without_nats(tmp_path: Path) -> None:
    report = tmp_path / "shop.xml"
    done = run_pytest(SHOP, report)
    assert done.returncode == 0, done.stdout + done.stderr
    found = counts(report)
    assert found["tests"] >= 10, found
    assert found["failures"] == found["errors"] == found["skipped"] == 0, found


def test_the_guard_fails_a_suite_that_reaches_for_nats(tmp_path: Path) -> None:
    # The same run with a test that submits for real: the plugin makes it fail.
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_real_nats.py").write_text(
        "from celeriac import Celeriac\n"
        "app = Celeriac('guarded')\n"
        "add = app.task(name='add')(lambda a, b: a + b)\n"
        "def test_submit():\n"
        "    try:\n"
        "        add.delay(1, 2)\n"
        "    except Exception:\n"
        "        pass  # swallowed: the plugin still fails the run\n"
    )
    done = run_pytest(suite, tmp_path / "guard.xml", "--rootdir", str(suite))
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert "FORBIDDEN NETWORK USE" in done.stdout
    assert "'127.0.0.1', 9" in done.stdout
