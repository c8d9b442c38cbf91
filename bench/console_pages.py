"""``python -m bench.console_pages``: what each console page and the admin key list cost at 10,000 keys.

Before paging, the console's key list answered every key with its usage (3.7 MB in 2.6 s at
10,000 keys) and ``GET /admin/v1/keys`` every record (3 MB in 0.5 s). This seeds one Redis the
way bench/reports.py does (10,000 keys in 100 teams, a year of rollups, a tenth of the keys
spending each day) and times what each page's call runs, best of ``--repeat``, beside the old
whole listings measured in the same run, with the size of each answer as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import orjson
import redis

from bench.local_redis import local_redis
from bench.reports import YEAR, seed
from gateway.admin.key_listing import key_page
from gateway.admin.keys import KeyStore
from gateway.admin.usage_report import usage_report
from gateway.console import data, teams_page
from gateway.ledger.query import DateRange
from gateway.store import client as redis_client
from gateway.store.keyspace import KeySpace

MONTH = DateRange(date(2025, 6, 1), date(2025, 6, 30))


async def old_console_keys(client: Any) -> dict[str, Any]:
    """What the console's Keys page answered before: every key, each with its usage."""
    keys = await KeyStore(client).list()
    usages = await asyncio.gather(*(usage_report(client, KeySpace(k["key_id"], k["team"])) for k in keys))
    return {"data": [{**k, **u} for k, u in zip(keys, usages, strict=True)]}


async def old_admin_keys(client: Any) -> dict[str, Any]:
    """What GET /admin/v1/keys answered before: every record."""
    return {"object": "list", "data": await KeyStore(client).list()}


def cases(client: Any) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    return [
        ("before: console keys, every key with its usage", lambda: old_console_keys(client)),
        ("before: admin keys, every record", lambda: old_admin_keys(client)),
        ("console keys, page 1 of 50", lambda: data.keys_page(client, None)),
        ("console keys, page 150 of 50", lambda: data.keys_page(client, None, page=150)),
        ("console keys, search 'team-042'", lambda: data.keys_page(client, None, "team-042")),
        ("console keys, one team", lambda: data.keys_page(client, "team-007")),
        ("admin keys, page 1 of 100", lambda: _as_json(key_page(client))),
        ("admin keys, page 10 of 1,000", lambda: _as_json(key_page(client, page=10, per_page=1000))),
        ("console overview, a month", lambda: data.overview(client, MONTH)),
        ("console overview, a year", lambda: data.overview(client, YEAR)),
        ("console teams (budgets now)", lambda: data.teams_page(client)),
        ("console team page, a year", lambda: teams_page.team_page(client, "team-042", YEAR)),
    ]


async def _as_json(listing: Awaitable[Any]) -> dict[str, Any]:
    return dict((await listing).as_json())


async def measure(url: str, repeat: int) -> list[tuple[str, float, int]]:
    client = await redis_client.connect(url, 64)  # the gateway's own, bounded client
    rows = []
    try:
        for label, run in cases(client):
            times, size = [], 0
            for _ in range(repeat):
                started = time.perf_counter()
                answer = await run()
                size = len(orjson.dumps(answer))  # what the route would send, serialised outside the timing
                times.append(time.perf_counter() - started)
            print(f"{label}: {min(times):.3f} s, {size:,} bytes", file=sys.stderr, flush=True)
            rows.append((label, min(times), size))
    finally:
        await client.aclose()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with local_redis() as port:
        print(f"seeding {args.keys:,} keys in {args.teams} teams, a year of rollups ...", file=sys.stderr)
        seed(redis.Redis(port=port), args.keys, args.teams, 0.1)
        rows = asyncio.run(measure(f"redis://127.0.0.1:{port}/0", args.repeat))
    where = f"{args.keys:,} keys, {args.teams} teams, one Redis"
    print(f"| call ({where}) | seconds (best of {args.repeat}) | JSON bytes |")
    print("| --- | --- | --- |")
    for label, seconds, size in rows:
        print(f"| {label} | {seconds:.3f} | {size:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
