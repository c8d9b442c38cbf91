"""What each call cost the company: cost and margin beside spend, exact to the micro-dollar.

Three stand-in channels over real HTTP, each delivering the images a call asks for and keeping
count of what it delivered: ``cheap`` (Seedream 4.5 at $0.100 an image against a price of $0.135,
Seedream 4.0 at $0.150 against $0.162), ``pricey`` (Seedream 4.5 at $0.140: a negative margin;
every fourth call it gets refused with a 503, so the call moves on to cheap) and ``listed``
(Seedream 5.0, no cost configured: it costs its price). What the report must say is computed from
what the stand-ins delivered, not from the gateway's records; the records must agree with both.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from gateway.money.micros import micros_to_usd, usd_to_micros
from gateway.money.pricing import DEFAULT_PRICES_USD
from gateway.store.keyspace import KeySpace, TeamSpace, directory_entry
from tests.channel_upstreams import StandIn, channel, channel_gateway, envelope
from tests.support import TLS, Gateway, RedisServer, agenerate, run_cli

SEEDREAM_40, SEEDREAM_45, SEEDREAM_50 = sorted(DEFAULT_PRICES_USD)
PRICES = {model: usd_to_micros(usd) for model, usd in DEFAULT_PRICES_USD.items()}
COSTS = {
    "cheap": {SEEDREAM_45: 100_000, SEEDREAM_40: 150_000},
    "pricey": {SEEDREAM_45: 140_000},
    "listed": {},  # no cost configured: each image costs its price
}
LEGACY_DAY = "2025-03-10"


@dataclass
class Delivered:
    """What one stand-in delivered: images per (model, team), from the bodies it answered."""

    images: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))


def delivering(name: str, delivered: Delivered, refuse_every: int = 0) -> Any:
    """Answer with as many images as the call asks for (``n``), counting them; every
    ``refuse_every``-th call a 503 with the upstream's envelope instead."""
    seen = [0]

    def answer(request: web.Request, body: bytes) -> web.Response:
        seen[0] += 1
        if refuse_every and seen[0] % refuse_every == 0:
            return envelope(503)(request, body)  # type: ignore[return-value]
        sent = orjson.loads(body)
        n = sent.get("n", 1)
        delivered.images[(sent["model"], sent["user"].split("@")[0])] += n
        data = [{"url": f"https://{name}.example/{i}.png"} for i in range(n)]
        return web.json_response({"created": 1, "data": data, "usage": {"generated_images": n}})

    return answer


@dataclass
class Shop:
    gateway: Gateway
    redis: RedisServer
    delivered: dict[str, Delivered]
    statuses: list[int]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    base = tmp_path_factory.mktemp("margin")
    redis = RedisServer(base / "redis").start()
    stand_ins = {name: StandIn().start() for name in COSTS}
    delivered = {name: Delivered() for name in COSTS}
    for name, upstream in stand_ins.items():
        upstream.reset(delivering(name, delivered[name], refuse_every=4 if name == "pricey" else 0))
    channels = [
        channel(
            "cheap",
            stand_ins["cheap"],
            models=[SEEDREAM_45, SEEDREAM_40],
            cost_usd={SEEDREAM_45: "0.100", SEEDREAM_40: "0.15"},
        ),
        channel(
            "pricey", stand_ins["pricey"], models=[SEEDREAM_45], cost_usd={SEEDREAM_45: "0.140000"}, weight=2
        ),
        channel("listed", stand_ins["listed"], models=[SEEDREAM_50]),
    ]
    try:
        with channel_gateway(redis.url, base / "gw", channels, dict(stand_ins)) as gw:
            statuses = asyncio.run(_traffic(gw))
            _seed_the_release_before(redis)
            yield Shop(gw, redis, delivered, statuses)
    finally:
        for upstream in stand_ins.values():
            upstream.stop()
        redis.stop()


async def _traffic(gw: Gateway) -> list[int]:
    """60 calls of two teams (each call names its team as its user), random models and sizes."""
    rng = random.Random(20261207)
    keys = {team: gw.create_key(team=team)[0] for team in ("studio", "ads")}
    limit = asyncio.Semaphore(8)
    async with httpx.AsyncClient(timeout=30, verify=TLS) as client:

        async def one() -> int:
            team = rng.choice(sorted(keys))
            body = {"model": rng.choice(sorted(PRICES)), "n": rng.randint(1, 3), "user": f"{team}@example"}
            async with limit:
                return (await agenerate(client, keys[team], gw, **body)).status_code

        return await asyncio.gather(*(one() for _ in range(60)))


def _seed_the_release_before(redis: RedisServer) -> None:
    """A team's day as the release before channels wrote it: plain rollup fields, no margin, a
    record with no channel and no cost."""
    with redis.client() as r:
        key_id = "legacykey001"
        r.hset(KeySpace(key_id, "legacy").record, mapping={"key_id": key_id, "team": "legacy", "name": "old"})
        r.hset(directory_entry(key_id), "team", "legacy")
        r.sadd("gw:keys", key_id)
        r.sadd("gw:teams", "legacy")
        amounts = {"calls": 3, "images": 4, "spend": 4 * 162_000, "failed": 0}
        r.hset(
            TeamSpace("legacy").rollup(LEGACY_DAY),
            mapping={f"{SEEDREAM_40}|{w}": n for w, n in amounts.items()},
        )
        r.hset(
            TeamSpace("legacy").key_rollup(LEGACY_DAY),
            mapping={f"{key_id}|{w}|{SEEDREAM_40}": n for w, n in amounts.items()},
        )
        record = {
            "request_id": "req_old", "ts_ms": 1741600000000, "day": LEGACY_DAY, "team": "legacy",
            "key_id": key_id, "key_name": "old", "model": SEEDREAM_40, "n": 4, "images": 4,
            "upstream_images": 4, "unit_price_micros": 162_000, "charge_micros": 648_000,
            "upstream_status": 200, "upstream_latency_ms": 9, "outcome": "ok", "client_left": 0,
            "reconcile": 0, "stream": 0, "user": "", "reserved": 1, "over_budget": 0,
        }  # fmt: skip
        r.xadd(KeySpace(key_id, "legacy").ledger, record, id="1741600000000-0")


def days() -> dict[str, str]:
    today = datetime.now(UTC).date()
    return {"start": (today - timedelta(days=1)).isoformat(), "end": (today + timedelta(days=1)).isoformat()}


def report(shop: Shop, group_by: str, fmt: str = "json", **dates: str) -> Any:
    with shop.gateway.admin() as admin:
        response = admin.get(
            "/admin/v1/reports/spend", params={**(dates or days()), "group_by": group_by, "format": fmt}
        )
    assert response.status_code == 200, response.text
    return response.json() if fmt == "json" else response.text


def records(shop: Shop, **dates: str) -> list[dict[str, Any]]:
    with shop.gateway.admin() as admin:
        text = admin.get("/admin/v1/usage", params={**(dates or days()), "format": "jsonl"}).text
    return [json.loads(line) for line in text.splitlines()]


def expected_by_channel(shop: Shop) -> dict[str, tuple[int, int, int]]:
    """(spend, cost, margin) per channel, in micro-USD, from what the stand-ins delivered."""
    found = {}
    for name, delivered in shop.delivered.items():
        spend = sum(n * PRICES[model] for (model, _), n in delivered.images.items())
        cost = sum(n * COSTS[name].get(model, PRICES[model]) for (model, _), n in delivered.images.items())
        found[name] = (spend, cost, spend - cost)
    return found


def test_the_traffic_reached_every_channel_and_some_calls_moved_on(shop: Shop) -> None:
    assert set(shop.statuses) == {200}
    assert all(d.images for d in shop.delivered.values()), "each channel delivered"
    moved_on = [r for r in records(shop) if r["failed_over"]]
    assert moved_on and {
        (r["channel"], r["outcome"], r["charge_micros"], r["cost_micros"]) for r in moved_on
    } == {("pricey", "5xx", 0, 0)}


def test_a_report_by_channel_has_cost_and_margin_exact_to_the_micro_dollar(shop: Shop) -> None:
    body = report(shop, "channel")
    rows = {
        row["channel"]: (row["spend_micros"], row["cost_micros"], row["margin_micros"])
        for row in body["data"]
    }
    assert rows == expected_by_channel(shop)
    for row in body["data"]:
        assert row["cost_usd"] == micros_to_usd(row["cost_micros"])
        assert row["margin_usd"] == micros_to_usd(row["spend_micros"] - row["cost_micros"])
    assert rows["pricey"][2] < 0 < rows["cheap"][2] and rows["listed"][2] == 0
    totals = body["totals"]
    assert (totals["spend_micros"], totals["cost_micros"], totals["margin_micros"]) == tuple(
        sum(v[i] for v in rows.values()) for i in range(3)
    )


def _sums(recs: list[dict[str, Any]], columns: list[str]) -> dict[tuple[str, ...], list[int]]:
    """Calls, images, spend, cost and margin of the calls' records per value of ``columns`` (the
    records of attempts moved on from are not calls)."""
    out: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0] * 5)
    for rec in recs:
        if rec["failed_over"]:
            continue
        row = out[tuple(str(rec[c]) for c in columns)]
        cost = rec["cost_micros"]
        for i, value in enumerate(
            (1, rec["images"], rec["charge_micros"], cost, rec["charge_micros"] - cost)
        ):
            row[i] += value
    return dict(out)


GROUPINGS = [
    "channel",
    "team,channel",
    "channel,model",
    "key,channel,day",
    "user,channel",
    "channel,team,model,user",
]


@pytest.mark.parametrize("group_by", GROUPINGS)
def test_every_grouping_with_channel_adds_up_to_the_records(shop: Shop, group_by: str) -> None:
    columns = [c for g in group_by.split(",") for c in (["key_id", "key_name"] if g == "key" else [g])]
    body = report(shop, group_by)
    rows = {
        tuple(row[c] for c in columns): [
            row[n] for n in ("calls", "images", "spend_micros", "cost_micros", "margin_micros")
        ]
        for row in body["data"]
    }
    assert rows == _sums(records(shop), columns)


def test_each_record_carries_its_channel_and_cost(shop: Shop) -> None:
    for rec in records(shop):
        if rec["failed_over"]:
            continue
        unit_cost = COSTS[rec["channel"]].get(rec["model"], rec["unit_price_micros"])
        assert rec["cost_micros"] == rec["images"] * unit_cost
        assert rec["cost_usd"] == micros_to_usd(rec["cost_micros"])
        assert rec["margin_usd"] == micros_to_usd(rec["charge_micros"] - rec["cost_micros"])


AMOUNTS = ["calls", "images", "spend_usd", "succeeded", "failed", "cost_usd", "margin_usd"]


def test_csv_and_the_cli_carry_cost_and_margin_as_the_last_columns(shop: Shop) -> None:
    table = list(csv.reader(io.StringIO(report(shop, "team,channel", "csv"))))
    assert table[0] == ["team", "channel", *AMOUNTS]
    as_json = report(shop, "team,channel")
    assert table[-1] == ["TOTAL", "", *(str(as_json["totals"][c]) for c in AMOUNTS)]
    for cells, row in zip(table[1:-1], as_json["data"], strict=True):
        assert cells == [str(row[c]) for c in table[0]]
    dates = ["report", "spend", "--start", days()["start"], "--end", days()["end"], "--group-by"]
    cli = run_cli(shop.redis.url, *dates, "team,channel", "--format", "json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == as_json
    header, *_, total = run_cli(shop.redis.url, *dates, "channel").stdout.splitlines()
    assert header.split() == ["channel", *AMOUNTS]
    assert total.split()[-2:] == [as_json["totals"]["cost_usd"], as_json["totals"]["margin_usd"]]


def test_rollups_and_records_from_before_channels_report_as_the_default_channel_at_cost(shop: Shop) -> None:
    old = {"start": LEGACY_DAY, "end": LEGACY_DAY}
    (row,) = report(shop, "team,channel", **old)["data"]
    assert (row["team"], row["channel"], row["spend_micros"]) == ("legacy", "default", 648_000)
    assert (row["cost_micros"], row["margin_micros"]) == (648_000, 0)
    (rec,) = records(shop, **old)
    assert (rec["channel"], rec["cost_micros"], rec["margin_usd"], rec["attempt"], rec["failed_over"]) == (
        "default",
        648_000,
        "0.000000",
        1,
        0,
    )


def test_a_negative_margin_reaches_a_spreadsheet_as_a_number_and_a_formula_still_does_not() -> None:
    from gateway.ledger.csv_cells import csv_safe

    assert csv_safe("-0.040000") == "-0.040000" and csv_safe("-12") == "-12"
    for formula in ("-0.04+cmd|' /C calc'!A0", "-1-1", "=1+1", "-", "-.5", "-1e3"):
        assert csv_safe(formula) == "'" + formula
