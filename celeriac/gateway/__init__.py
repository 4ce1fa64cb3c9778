"""``celeriac gateway``: submit tasks, read results and take signed webhooks over HTTP.

Any language that speaks HTTP can use Celeriac through it: the gateway checks each
request the way the SDK does, publishes through one NATS connection per process and
answers mistakes with RFC 9457 problem details (docs/gateway.md).
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    """Run the gateway until interrupted; its exit status."""
    from celeriac.gateway.server import main as serve

    return serve(argv)
