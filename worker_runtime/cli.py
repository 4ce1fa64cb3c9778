"""``celeriac worker``: parse the command line, load the app, run the worker."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading

from celeriac.exceptions import CeleriacError
from celeriac.protocol.signing import SigningKeyError, read_keys_file
from celeriac.worker_runtime.loading import AppLoadError, load_app
from celeriac.worker_runtime.logs import configure_logging, set_worker_name
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
    configure_logging(options.loglevel, options.log_format)
    try:
        app = load_app(options.app_spec)
        if options.signing_keys_file is not None:
            app.signing_keys = read_keys_file(options.signing_keys_file)
    except (AppLoadError, SigningKeyError) as exc:  # a bad key: CELERIAC_SIGNING_KEYS or file
        log.error("%s", exc)
        return 2
    if app.signing_keys is not None:
        ids = ", ".join(app.signing_keys.key_ids)
        log.info(
            "task messages must be signed with one of the keys %s (signing with the first)", ids
        )
    try:
        worker = Worker(app, options)
        set_worker_name(worker.name)
        code = asyncio.run(worker.run())
    except (OSError, CeleriacError) as exc:
        # No NATS at start, or the health port is taken: say so and let the supervisor retry.
        log.error("%s", exc)
        return 1
    return exit_past_stuck_tasks(code)


def exit_past_stuck_tasks(code: int) -> int:
    """Return ``code``, or exit at once if task code still runs on a worker thread.

    The interpreter joins its threads before exiting, so a sync task that never
    returns would keep a drained worker alive forever; its message was already
    handed back for redelivery, so nothing is lost by not waiting.
    """
    threads = [t for t in threading.enumerate() if t.name.startswith("celeriac-task")]
    for thread in threads:
        if not thread.daemon:
            thread.join(0.2)  # an idle pool thread ends at once; a busy one does not
    stuck = [t for t in threads if t.is_alive() and not t.daemon]
    if not stuck:
        return code
    log.warning("exiting with %d task thread(s) still running; not waiting for them", len(stuck))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
