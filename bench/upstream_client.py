"""``python -m bench.upstream_client``: what one upstream call costs the gateway, beside aiohttp's client.

The upstream call measured apart from Redis, uvicorn and the route: ``UpstreamClient.generate``
(the request built, sent, the answer read whole, over gateway/upstream/http1/) from 32 callers
looping against ``bench/fixed_upstream.py`` for a few seconds, on uvloop as in a worker. Its
reference is aiohttp's own client doing the same (``ClientSession.post`` with the same headers,
the answer read whole, no decompression), the fastest general client here: the transport is the
gateway's own only as long as it stays well ahead of it.

This process is pinned to one CPU and the upstream stand-in to the other, and the two run in turns
(gateway, aiohttp, gateway, ...), so a disturbance of a shared machine hits them alike. Figures:
calls per second, and this process's CPU time per call (what a worker pays per request for its
upstream call; it moves much less than calls/s when the machine is shared). The median of the
turns is reported, and every turn is kept in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench.stack import Stack
from gateway.upstream.client import UpstreamClient

BODY = b'{"model": "doubao-seedream-4-5-251128", "prompt": "bench", "n": 1}'
HEADERS = {
    "Authorization": "Bearer up-bench",
    "Content-Type": "application/json",
    "Accept": "application/json",
}
CLIENTS = ("gateway", "aiohttp")


async def gateway_client(url: str) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    client = UpstreamClient(url, "up-bench", 30.0, 5.0, 1000)

    async def call() -> None:
        reply = await client.generate(BODY)
        assert reply.status == 200 and reply.whole, reply.status

    return call, client.aclose


async def aiohttp_client(url: str) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=30)
    session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def call() -> None:
        async with session.post(url, data=BODY, headers=HEADERS) as response:
            await response.read()
            assert response.status == 200, response.status

    return call, session.close


async def turn(url: str, name: str, callers: int, warmup_s: float, seconds: float) -> dict[str, float]:
    call, close = await (gateway_client if name == "gateway" else aiohttp_client)(url)
    calls, counting, stop = 0, False, False

    async def caller() -> None:
        nonlocal calls
        while not stop:
            await call()
            if counting:
                calls += 1

    tasks = [asyncio.create_task(caller()) for _ in range(callers)]
    await asyncio.sleep(warmup_s)
    counting, cpu0, wall0 = True, time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    counting = False
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    stop = True
    await asyncio.gather(*tasks)
    await close()
    return {"calls_per_s": calls / wall, "cpu_us_per_call": 1e6 * cpu / calls, "cpu_pct": 100 * cpu / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream_client", description=__doc__)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path, help="also write every turn here")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    stack = Stack(Path(tempfile.mkdtemp(prefix="bench-upstream-client-")))
    try:
        upstream = stack.fixed_upstream(frozenset(cpus[1:]) if len(cpus) > 1 else None)
        if len(cpus) > 1:
            os.sched_setaffinity(0, cpus[:1])
        url = f"http://127.0.0.1:{upstream.port}/v1/images/generations"
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in CLIENTS}
        for n in range(args.turns):
            for name in CLIENTS:
                result = uvloop.run(turn(url, name, args.callers, 0.5, args.seconds))
                runs[name].append(result)
                print(
                    f"turn {n + 1} {name:8} {result['calls_per_s']:8.0f} calls/s "
                    f"{result['cpu_us_per_call']:7.1f} us CPU/call  ({result['cpu_pct']:.0f}% CPU)",
                    flush=True,
                )
    finally:
        stack.close()
        shutil.rmtree(stack.workdir, ignore_errors=True)
    print(f"\n{args.callers} callers, {args.turns} turns of {args.seconds:g} s each, median of the turns:")
    print("| client | calls/s | client CPU us per call | CPU per call vs the gateway's |")
    print("| --- | --- | --- | --- |")
    medians = {name: _median(runs[name]) for name in CLIENTS}
    reference = medians["gateway"]["cpu_us_per_call"]
    for name, figures in medians.items():
        versus = f"{figures['cpu_us_per_call'] / reference:.2f}x"
        print(f"| {name} | {figures['calls_per_s']:,.0f} | {figures['cpu_us_per_call']:,.1f} | {versus} |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": medians}, indent=2))
    return 0


def _median(results: list[dict[str, float]]) -> dict[str, Any]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


if __name__ == "__main__":
    sys.exit(main())
