"""``python -m bench.gatewaycost``: submitting over HTTP through ``celeriac gateway``
against the SDK's ``apply_async``, on the same nats-server.

Both sides enqueue the same task on the same queue (no worker drains it). Each round
has two phases: one submit at a time (its p50/p99 latency is what one caller waits),
then ``--concurrency`` submits in flight (the rate; HTTP over a keep-alive pool of
that many connections, the SDK on one NATS connection). Sides alternate
(sdk, http, http, sdk, ...) so a slow moment of a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from celeriac_devenv.processes import ManagedProcess, spawn, wait_until

from bench.servers import running_nats
from celeriac.app import Celeriac
from celeriac.protocol import names

QUEUE = "gatewaycost"
TASK = "bench.noop"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Round:
    """One side's measured round."""

    side: str  # "sdk" or "http"
    p50_ms: float
    p99_ms: float
    per_second: float

    def describe(self) -> str:
        """``http: p50 1.234 ms, p99 3.210 ms one at a time; 2,345 submits/s ...``."""
        return (
            f"{self.side:4}: p50 {self.p50_ms:.3f} ms, p99 {self.p99_ms:.3f} ms one at a time; "
            f"{self.per_second:,.0f} submits/s in flight"
        )


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def summary(rounds: list[Round], label: str) -> str:
    """Medians of each side's figures, and the HTTP/SDK ratios."""

    def median(side: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in rounds if r.side == side)

    sdk_rate, http_rate = median("sdk", "per_second"), median("http", "per_second")
    return (
        f"{label}: median over {len(rounds) // 2} rounds each: "
        f"SDK p50 {median('sdk', 'p50_ms'):.3f} ms, p99 {median('sdk', 'p99_ms'):.3f} ms, "
        f"{sdk_rate:,.0f} submits/s; HTTP p50 {median('http', 'p50_ms'):.3f} ms, "
        f"p99 {median('http', 'p99_ms'):.3f} ms, {http_rate:,.0f} submits/s "
        f"(HTTP/SDK rate {http_rate / sdk_rate:.2f})"
    )


async def _timed(submit: Callable[[], Awaitable[None]], count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await submit()
        latencies.append(time.perf_counter() - started)
    return latencies


async def _rate(submit: Callable[[], Awaitable[None]], count: int, concurrency: int) -> float:
    remaining = count

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await submit()

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def _side(
    side: str, submit: Callable[[], Awaitable[None]], latency_n: int, rate_n: int, concurrency: int
) -> Round:
    await _timed(submit, min(50, latency_n))  # warm up: connections, caches
    latencies = await _timed(submit, latency_n)
    rate = await _rate(submit, rate_n, concurrency)
    return Round(side, 1000 * percentile(latencies, 0.5), 1000 * percentile(latencies, 0.99), rate)


@contextmanager
def running_gateway(nats_url: str, scratch: Path, token: str) -> Iterator[str]:
    """``celeriac gateway`` on a free port; its base URL."""
    tokens = scratch / "tokens.json"
    tokens.write_text(json.dumps({"tokens": {token: [QUEUE]}}))
    env = {**os.environ, "CELERIAC_NATS_URL": nats_url,
           "CELERIAC_GATEWAY_TOKENS_FILE": str(tokens)}  # fmt: skip
    process: ManagedProcess = spawn(
        "gateway", [sys.executable, "-m", "celeriac", "gateway", "--port", "0"],
        log_dir=scratch, env=env, cwd=ROOT,
    )  # fmt: skip
    try:

        def address() -> str | None:
            found = re.search(r"celeriac gateway on (http://\S+)/", process.log_path.read_text())
            return found.group(1) if found else None

        yield wait_until(address, timeout=60, what="the gateway's address", alive=process)
    finally:
        process.stop(grace=5)


async def _measure(url: str, gateway: str, token: str, args: argparse.Namespace) -> list[Round]:
    app = Celeriac("gatewaycost", nats_url=url)
    noop = app.task(name=TASK, queue=QUEUE)(lambda: None)
    broker = await app.broker()
    await broker.ensure_queue(QUEUE)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"task": TASK, "queue": QUEUE}
    rounds: list[Round] = []
    # aiohttp rather than httpx: its pool costs the client less, so the figure is the
    # gateway's, not the load generator's.
    pool = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(gateway, connector=pool, headers=headers) as http:

        async def over_http() -> None:
            async with http.post("/v1/tasks", json=body) as response:
                text = await response.text()
                if response.status != 202:
                    raise RuntimeError(f"the gateway answered {response.status}: {text}")

        async def with_sdk() -> None:
            await noop.aapply_async()

        try:
            for index in range(2 * args.rounds):
                side = "http" if index % 4 in (1, 2) else "sdk"
                submit = over_http if side == "http" else with_sdk
                done = await _side(side, submit, args.latency_tasks, args.tasks, args.concurrency)
                rounds.append(done)
                print(f"round {index + 1}: {done.describe()}", flush=True)
                # No worker drains the queue: empty it so every round starts alike.
                await broker.js.purge_stream(names.stream_name(QUEUE))
        finally:
            await app.aclose()
    return rounds


def main(argv: list[str] | None = None) -> int:
    """Measure both sides, alternated, and print the medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.gatewaycost", description=__doc__)
    parser.add_argument("-n", "--tasks", type=int, default=5000, help="submits in flight per round")
    parser.add_argument(
        "--latency-tasks", type=int, default=1000, help="submits one at a time per round"
    )
    parser.add_argument("-c", "--concurrency", type=int, default=32, help="submits in flight")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each side")
    args = parser.parse_args(argv)
    token = secrets.token_urlsafe(24)
    with (
        tempfile.TemporaryDirectory(prefix="celeriac-gatewaycost-") as scratch,
        running_nats(Path(scratch)) as server,
        running_gateway(server.url, Path(scratch), token) as gateway,
    ):
        rounds = asyncio.run(_measure(server.url, gateway, token, args))
    label = f"{args.latency_tasks} one at a time, {args.tasks} with {args.concurrency} in flight"
    print(summary(rounds, label))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
