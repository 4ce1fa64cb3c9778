"""``celeriac worker``: parse the command line, load the app, run the worker."""

from __future__ import annotations

import asyncio
import logging
import sys

from celeriac.exceptions import CeleriacError
from celeriac.worker_runtime.loading import AppLoadError, load_app
from celeriac.worker_runtime.logs import configure_logging
from celeriac.worker_runtime.options import OptionsError, parse_options
from celeriac.worker_runtime.worker import Worker

log = logging.getLogger("celeriac.worker")


def main(argv: list[str]) -> int:
    """Run a worker until it is stopped; returns the process exit code."""
    try:
        options = parse_options(argv)
    except OptionsError as exc:
        print(f"celeriac worker: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(options.loglevel)
    try:
        app = load_app(options.app_spec)
    except AppLoadError as exc:
        log.error("%s", exc)
        return 2
    try:
        return asyncio.run(Worker(app, options).run())
    except (OSError, CeleriacError) as exc:
        # No NATS at start, or the health port is taken: say so and let the supervisor retry.
        log.error("%s", exc)
        return 1
