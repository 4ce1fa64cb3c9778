"""``celeriac dashboard``: a live web page of the queues, workers, tasks and dead letters.

It reads what JetStream stores (as the admin commands do) and keeps no state of its
own: the browser polls the JSON API under ``/api/`` and keeps the chart's series.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    """Run the dashboard until interrupted; its exit status."""
    from celeriac.dashboard.server import main as serve

    return serve(argv)
