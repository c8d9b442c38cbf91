"""``python -m bench.team_slot``: what one team's Redis slot sustains.

A team and all of its keys share one hash tag, so on a Redis Cluster one team's calls all run
on one primary (a Cluster spreads teams, not one team's calls). Every call costs that primary two
scripts: reserve.lua and settle.lua. This runs the real scripts (``gateway.budget.reserve`` and
``settle``, as the gateway calls them) for one team with 50 keys from several processes, and
reads redis-server's own CPU time: calls per second, and the calls per second one core of Redis
would carry at 100% (throughput / Redis CPU share), which is the ceiling of one team on one slot.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from bench.local_redis import local_redis
from gateway.admin.keys import KeyCreate, KeyStore, parse_token
from gateway.money import budget
from gateway.money.micros import charge_micros
from gateway.money.periods import Periods
from gateway.money.usage_record import UsageRecord
from gateway.store.keyspace import KeySpace

PRICE = 135_000


async def make_keys(url: str, count: int) -> list[tuple[str, str]]:
    client = AsyncRedis.from_url(url)
    store = KeyStore(client)
    keys = []
    for index in range(count):
        secret, record = await store.create(KeyCreate(team="hot-team", name=f"k{index}"))
        parsed = parse_token(secret)
        assert parsed is not None
        keys.append((record["key_id"], parsed[1]))
    await client.aclose()
    return keys


async def drive(url: str, keys: list[tuple[str, str]], seconds: float, concurrency: int, worker: int) -> int:
    client = AsyncRedis.from_url(url, max_connections=concurrency)
    periods = Periods.now()
    done = 0
    stop_at = time.monotonic() + seconds

    async def loop(lane: int) -> None:
        nonlocal done
        sequence = 0
        while time.monotonic() < stop_at:
            key_id, secret_hash = keys[(lane + sequence) % len(keys)]
            space = KeySpace(key_id, "hot-team")
            request_id = f"req-{worker}-{lane}-{sequence}"
            sequence += 1
            held = await budget.reserve(
                client,
                space=space,
                secret_hash=secret_hash,
                model="m",
                request_id=request_id,
                max_images=1,
                unit_price_micros=PRICE,
                lifetime_ms=60_000,
                periods=periods,
            )
            assert isinstance(held, budget.Reservation), held
            record = _record(request_id, key_id, periods.day)
            await budget.settle(
                client,
                space=space,
                request_id=request_id,
                model="m",
                images=1,
                charge_micros=PRICE,
                periods=periods,
                retention_days=1,
                record_fields=record.stream_fields(),
            )
            done += 1

    await asyncio.gather(*(loop(lane) for lane in range(concurrency)))
    await client.aclose()
    return done


def _record(request_id: str, key_id: str, day: str) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        ts_ms=int(time.time() * 1000),
        day=day,
        team="hot-team",
        key_id=key_id,
        key_name="k",
        model="m",
        n=1,
        images=1,
        upstream_images=1,
        unit_price_micros=PRICE,
        charge_micros=charge_micros(1, PRICE),
        upstream_status=200,
        upstream_latency_ms=1,
        outcome="ok",
        client_left=0,
        stream=0,
        reconcile=0,
    )


def _worker(args: tuple[str, list[tuple[str, str]], float, int, int]) -> int:
    return asyncio.run(drive(*args))


def redis_cpu(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight per process")
    args = parser.parse_args(argv)
    with local_redis() as port:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis(port=port)
        keys = asyncio.run(make_keys(url, 50))
        cpu_before, started = redis_cpu(client), time.monotonic()
        jobs = [(url, keys, args.seconds, args.concurrency, w) for w in range(args.processes)]
        with multiprocessing.Pool(args.processes) as pool:
            calls = sum(pool.map(_worker, jobs))
        wall = time.monotonic() - started
        share = (redis_cpu(client) - cpu_before) / wall
        stats: dict[str, Any] = client.info("commandstats")
        script_us = float(stats["cmdstat_evalsha"]["usec_per_call"])
    rate = calls / wall
    print(f"one team, 50 keys, {args.processes} processes x {args.concurrency} in flight:")
    print(f"  {rate:,.0f} calls/s (reserve + settle each), redis-server at {share:.0%} of a core")
    print(f"  => one slot (one core of one primary) carries about {rate / max(share, 0.01):,.0f} calls/s")
    pure = 1e6 / (2 * script_us)
    print(f"  Redis' own time per script: {script_us:.0f} us, so {pure:,.0f} calls/s of pure script time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
