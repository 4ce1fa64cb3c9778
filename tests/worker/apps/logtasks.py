"""Tasks that log, for the log format tests: a plain line and an exception each."""

from __future__ import annotations

import logging

from celeriac.app import Celeriac

app = Celeriac("log-tests")
log = logging.getLogger("logtasks")


def _say(marker: str) -> str:
    log.info("saying %s", marker)
    try:
        raise ValueError(f"broken {marker}")
    except ValueError:
        log.exception("caught for %s", marker)
    return marker


@app.task(name="l.say")
def say(marker: str) -> str:
    """Log from a sync task (a thread, or a child process with --pool processes)."""
    return _say(marker)


@app.task(name="l.asay")
async def asay(marker: str) -> str:
    """Log from a coroutine on the worker's event loop."""
    return _say(marker)
