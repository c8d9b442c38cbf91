"""``python -m bench.upstream_client``: what one upstream call costs the gateway, per transport.

The choice behind ``GATEWAY_UPSTREAM_TRANSPORT``, measured apart from Redis, uvicorn and the
route: ``gateway.upstream.UpstreamClient.generate`` (the request built, sent, the answer read
whole) from 32 callers looping against ``bench/fixed_upstream.py`` for a few seconds, on uvloop
as in a worker. This process is pinned to one CPU and the upstream stand-in to the other, and
the transports run in turns (h1, aiohttp, h1, ...), so a disturbance of a shared machine
hits them alike. Figures: calls per second, and this process's CPU time per call (what a worker
pays per request for its upstream call; it moves much less than calls/s when the machine is
shared). The median of the turns is reported, and every turn is kept in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.stack import Stack
from gateway.upstream import transports
from gateway.upstream.client import UpstreamClient
from gateway.upstream.transports import TRANSPORTS

BODY = b'{"model": "doubao-seedream-4-5-251128", "prompt": "bench", "n": 1}'


async def turn(url: str, transport: str, callers: int, warmup_s: float, seconds: float) -> dict[str, float]:
    client = UpstreamClient(url, "up-bench", 30.0, 5.0, transport=transports.build(transport, 1000))
    calls, counting, stop = 0, False, False

    async def caller() -> None:
        nonlocal calls
        while not stop:
            reply = await client.generate(BODY)
            assert reply.status == 200 and reply.whole, reply.status
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
    await client.aclose()
    return {"calls_per_s": calls / wall, "cpu_us_per_call": 1e6 * cpu / calls, "cpu_pct": 100 * cpu / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream_client", description=__doc__)
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path, help="also write every turn here")
    args = parser.parse_args(argv)
    transports = args.transports.split(",")
    cpus = sorted(os.sched_getaffinity(0))
    stack = Stack(Path(tempfile.mkdtemp(prefix="bench-upstream-client-")))
    try:
        upstream = stack.fixed_upstream(frozenset(cpus[1:]) if len(cpus) > 1 else None)
        if len(cpus) > 1:
            os.sched_setaffinity(0, cpus[:1])
        url = f"http://127.0.0.1:{upstream.port}/v1/images/generations"
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in transports}
        for n in range(args.turns):
            for name in transports:
                result = uvloop.run(turn(url, name, args.callers, 0.5, args.seconds))
                runs[name].append(result)
                print(
                    f"turn {n + 1} {name:8} {result['calls_per_s']:8.0f} calls/s "
                    f"{result['cpu_us_per_call']:7.1f} us CPU/call  ({result['cpu_pct']:.0f}% CPU)",
                    flush=True,
                )
    finally:
        stack.close()
    print(f"\n{args.callers} callers, {args.turns} turns of {args.seconds:g} s each, median of the turns:")
    print("| transport | calls/s | client CPU us per call | vs h1 (CPU per call) |")
    print("| --- | --- | --- | --- |")
    medians = {name: _median(runs[name]) for name in transports}
    reference = medians.get("h1")
    for name, figures in medians.items():
        versus = f"{figures['cpu_us_per_call'] / reference['cpu_us_per_call']:.2f}x" if reference else ""
        print(f"| {name} | {figures['calls_per_s']:,.0f} | {figures['cpu_us_per_call']:,.1f} | {versus} |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": medians}, indent=2))
    return 0


def _median(results: list[dict[str, float]]) -> dict[str, Any]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


if __name__ == "__main__":
    sys.exit(main())
