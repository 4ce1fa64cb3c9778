"""Tasks the dead-letter and ``inspect active`` tests run: each waits on a file the test
creates, so the test decides when a task may succeed or finish."""

from __future__ import annotations

import time
from pathlib import Path

from celeriac.app import Celeriac

dlq_app = Celeriac("dlq-tests")
task = dlq_app.task


@task(name="d.add")
def add(a: int, b: int) -> int:
    return a + b


@task(name="d.until_file", autoretry_for=(RuntimeError,), max_retries=1, retry_backoff=0.1,
      retry_jitter=False)  # fmt: skip
def until_file(path: str) -> str:
    """Fails until ``path`` exists: dead-lettered first, then fixed and replayed."""
    if not Path(path).exists():
        raise RuntimeError(f"{path} does not exist yet")
    return "ok"


@task(name="d.block")
def block(path: str) -> str:
    """Runs until ``path`` exists: the test releases it."""
    while not Path(path).exists():
        time.sleep(0.05)
    return "released"
