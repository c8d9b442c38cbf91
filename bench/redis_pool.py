"""``python -m bench.redis_pool``: the shapes a bounded Redis connection layer could take, measured.

The choice behind ``gateway.redis_slots``. Against one local redis-server, with a small
two-command script run by EVALSHA (like the gateway's reserve and settle, much shorter):

- ``plain``: redis-py's ConnectionPool, unbounded (the gateway before: one connection per
  concurrent command);
- ``blocking``: redis-py's BlockingConnectionPool at 64 connections;
- ``slots``: ``gateway.redis_slots.BoundedPool`` at 64 (what the gateway uses).

For each: 32 callers looping for a few seconds (commands/s and client CPU µs per command, the
cost a worker pays at the bench's 32 connections), and a burst of 10,000 commands at once (time to
the last answer, failures, and the most clients Redis saw, from ``INFO clients``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool, ConnectionPool

from bench.stack import Stack
from gateway.store.slots import BoundedPool

SCRIPT = "redis.call('INCR', KEYS[1]); return redis.call('GET', KEYS[1])"
BOUND = 64


def make_pool(kind: str, url: str) -> ConnectionPool:
    common: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    if kind == "plain":
        return ConnectionPool.from_url(url, max_connections=20_000, **common)
    if kind == "blocking":
        return BlockingConnectionPool.from_url(url, max_connections=BOUND, timeout=10, **common)
    return BoundedPool.from_url(url, max_connections=BOUND, **common)


async def steady(client: aioredis.Redis, sha: str, callers: int, seconds: float) -> dict[str, float]:
    done = 0
    stop = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await client.evalsha(sha, 1, f"bench:{index}")
            done += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return {"commands_per_s": round(done / wall), "client_cpu_us_per_command": round(1e6 * cpu / done, 1)}


async def burst(client: aioredis.Redis, probe: aioredis.Redis, sha: str, calls: int) -> dict[str, float]:
    peak = 0
    finished = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not finished.is_set():
            try:
                info = await probe.info("clients")
            except Exception:  # noqa: BLE001 - Redis swamped by connects: sample again
                continue
            peak = max(peak, int(info["connected_clients"]) - 1)  # less the probe itself
            await asyncio.sleep(0.02)

    async def one(index: int) -> bool:
        try:
            await client.evalsha(sha, 1, f"burst:{index % 100}")
            return True
        except Exception:  # noqa: BLE001 - counted: any failure is what this measures
            return False

    watcher = asyncio.create_task(watch())
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(calls)))
    wall = time.perf_counter() - t0
    finished.set()
    await watcher
    return {"wall_s": round(wall, 3), "failed": results.count(False), "peak_redis_clients": peak}


async def measure(port: int, kinds: list[str], seconds: float, calls: int, repeat: int) -> dict[str, Any]:
    url = f"redis://127.0.0.1:{port}/0"
    probe = aioredis.Redis.from_url(url)
    sha = await probe.script_load(SCRIPT)
    out: dict[str, Any] = {kind: {"steady": [], "burst": []} for kind in kinds}
    for _ in range(repeat):  # in turns, so a disturbance of the machine hits every kind alike
        for kind in kinds:
            client = aioredis.Redis.from_pool(make_pool(kind, url))
            await client.evalsha(sha, 1, "warm")
            out[kind]["steady"].append(await steady(client, sha, 32, seconds))
            await client.aclose()
            client = aioredis.Redis.from_pool(make_pool(kind, url))
            out[kind]["burst"].append(await burst(client, probe, sha, calls))
            await client.aclose()
    await probe.aclose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="steady window per run")
    parser.add_argument("--calls", type=int, default=10_000, help="commands in the burst (at most 20,000)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 20_000:
        parser.error("--calls must be 1..20000")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="redis-pool-bench-") as tmp:
        stack = Stack(Path(tmp))
        try:
            redis = stack.redis(None)
            kinds = ["plain", "blocking", "slots"]
            import uvloop  # as in the gateway's workers

            result = uvloop.run(measure(redis.port, kinds, args.seconds, args.calls, args.repeat))
        finally:
            stack.close()
    print(json.dumps(result))
    print(json.dumps(summary(result), indent=1))
    return 0


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Best of the steady runs (interference only slows down), worst of the bursts."""
    out = {}
    for kind, runs in result.items():
        out[kind] = {
            "steady_commands_per_s": max(r["commands_per_s"] for r in runs["steady"]),
            "steady_cpu_us_per_command": min(r["client_cpu_us_per_command"] for r in runs["steady"]),
            "burst_wall_s": sorted(r["wall_s"] for r in runs["burst"]),
            "burst_failed": sum(r["failed"] for r in runs["burst"]),
            "burst_peak_redis_clients": max(r["peak_redis_clients"] for r in runs["burst"]),
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
