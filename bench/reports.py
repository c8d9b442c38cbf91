"""``python -m bench.reports``: how long a year's spend report takes over 10,000 keys.

Before team budgets a report read one rollup per key and day, so its time grew with the keys
ever issued. Reports now read one rollup per team and day (by team, model or day), and the
per-key rollups of those days only when grouped by key or user.

The store is seeded directly with the rollups settle.lua writes (the same names and fields, from
gateway.redis_keys), for a year: 10,000 keys in 100 teams, 3 models, and on each day a tenth of
the keys spent something (the per-key rollups grow with the keys that spend, not with the keys
ever issued). Each report is timed as ``GET /admin/v1/reports/spend`` runs it
(``ledger.spend_report``), best of three.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from bench.local_redis import local_redis
from gateway.ledger import reports as ledger
from gateway.ledger.query import DateRange
from gateway.store.keyspace import KEY_REGISTRY, LAYOUT, TEAM_REGISTRY, KeySpace, TeamSpace, directory_entry

MODELS = ("doubao-seedream-4-5-251128", "doubao-seedream-4-0-250828", "doubao-seededit-3-0-i2i-250628")
PRICE = 135_000
YEAR = DateRange(date(2025, 1, 1), date(2025, 12, 31))
MONTH = DateRange(date(2025, 6, 1), date(2025, 6, 30))
GROUPINGS: list[tuple[str, DateRange, tuple[str, ...]]] = [
    ("year by team", YEAR, ("team",)),
    ("year by model", YEAR, ("model",)),
    ("year by team, model, day", YEAR, ("team", "model", "day")),
    ("month by key", MONTH, ("key",)),
    ("year by key", YEAR, ("key",)),
]


def seed(client: redis.Redis, keys: int, teams: int, active_share: float) -> int:
    """Keys, teams and a year of rollups; answers how many per-key rollup fields were written."""
    rng = random.Random(14)
    team_of = {f"bench{k:07d}": f"team-{k % teams:03d}" for k in range(keys)}
    pipe = client.pipeline(transaction=False)
    for key_id, team in team_of.items():
        pipe.hset(
            KeySpace(key_id, team).record, mapping={"key_id": key_id, "team": team, "name": f"k-{key_id}"}
        )
        pipe.hset(directory_entry(key_id), "team", team)
        pipe.sadd(TeamSpace(team).keys, key_id)
    pipe.sadd(KEY_REGISTRY, *team_of)
    pipe.sadd(TEAM_REGISTRY, *set(team_of.values()))
    pipe.set(LAYOUT, "2")
    pipe.execute()
    written = 0
    key_ids = list(team_of)
    day = YEAR.start
    while day <= YEAR.end:
        team_totals: dict[str, dict[str, int]] = {}
        keyed: dict[str, dict[str, int]] = {}
        for key_id in rng.sample(key_ids, int(keys * active_share)):
            team = team_of[key_id]
            model = MODELS[rng.randrange(len(MODELS))]
            calls = rng.randrange(1, 20)
            amounts = {"calls": calls, "images": calls, "spend": calls * PRICE}
            totals = team_totals.setdefault(team, {})
            fields = keyed.setdefault(team, {})
            for what, value in amounts.items():
                totals[f"{model}|{what}"] = totals.get(f"{model}|{what}", 0) + value
                fields[f"{key_id}|{what}|{model}"] = value
        for team, totals in team_totals.items():
            pipe.hset(TeamSpace(team).rollup(day.isoformat()), mapping=totals)
            pipe.hset(TeamSpace(team).key_rollup(day.isoformat()), mapping=keyed[team])
            written += len(keyed[team])
        pipe.execute()
        day += timedelta(days=1)
    return written


async def time_reports(url: str, repeat: int) -> list[dict[str, Any]]:
    client = AsyncRedis.from_url(url)
    rows = []
    try:
        for label, days, group_by in GROUPINGS:
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                report = await ledger.spend_report(client, days, group_by)
                times.append(time.perf_counter() - started)
            print(f"{label}: {min(times):.3f} s", file=sys.stderr, flush=True)
            rows.append(
                {
                    "report": label,
                    "seconds": round(min(times), 3),
                    "rows": len(report.rows),
                    "calls": report.totals.calls,
                }
            )
    finally:
        await client.aclose()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--active-share", type=float, default=0.1, help="share of keys that spend on a day")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    with local_redis() as port:
        client = redis.Redis(port=port)
        print(f"seeding {args.keys:,} keys in {args.teams} teams, a year of rollups ...", file=sys.stderr)
        started = time.perf_counter()
        fields = seed(client, args.keys, args.teams, args.active_share)
        seconds = time.perf_counter() - started
        print(f"seeded {fields:,} per-key rollup entries in {seconds:.0f} s", file=sys.stderr)
        rows = asyncio.run(time_reports(f"redis://127.0.0.1:{port}/0", args.repeat))
    print(f"| report ({args.keys:,} keys, {args.teams} teams, one Redis) | seconds | rows |")
    print("| --- | --- | --- |")
    for row in rows:
        print(f"| {row['report']} | {row['seconds']:.3f} | {row['rows']:,} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reports.json").write_text(
        json.dumps({"keys": args.keys, "teams": args.teams, "rows": rows}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
